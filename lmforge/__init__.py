"""lmforge: a readable, real toolkit for the whole life of a large language model.

`import lmforge` stays cheap: heavy modules load on first use of `lmforge.load`.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def __getattr__(name: str):
    if name == "load":
        from lmforge.formats.loader import load

        return load
    raise AttributeError(f"module 'lmforge' has no attribute {name!r}")
