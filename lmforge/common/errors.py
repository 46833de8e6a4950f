"""The exception types for user-facing mistakes.

The CLI turns an `LmforgeError` into a one-line message and exit code 2, never a traceback.
Raise it with a message naming the bad value and what is allowed.
"""


class LmforgeError(Exception):
    """A user mistake or an unsupported input, described in one line."""


class ConfigError(LmforgeError, ValueError):
    """An invalid configuration value (also a ValueError, as dataclass validation usually raises)."""
