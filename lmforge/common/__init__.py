"""Small utilities shared by every layer; imports nothing else of lmforge."""

from lmforge.common.errors import ConfigError, LmforgeError

__all__ = ["ConfigError", "LmforgeError"]
