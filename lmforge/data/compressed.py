"""Binary streams over plain, gzip and zstd files that fail loudly on damage: a truncated gzip or zstd file
raises `EOFError`, a corrupt one the codec's error, so a reader reports the file instead of silently
yielding part of it (zstandard's `stream_reader` returns what it has when the input ends inside a frame);
`file_errors` and `damage_reason` name those errors and say them in one line.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 16


class ZstdFrames(io.RawIOBase):
    """The decompressed bytes of every zstd frame of a file, one after the other (as `zstd -d` concatenates
    them); `EOFError` when the file ends inside a frame."""

    def __init__(self, path: Path) -> None:
        import zstandard

        self._zstd = zstandard.ZstdDecompressor()
        self._src = open(path, "rb")  # noqa: SIM115 (closed in close())
        self._frame = None  # the decompressor of the frame being read; None between frames
        self._rest = b""  # compressed bytes after the end of the last frame, not yet fed
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        data, self._rest = self._rest or self._src.read(CHUNK), b""
        if not data:
            if self._frame is not None:
                raise EOFError("the file ends inside a zstd frame")
            return False
        if self._frame is None:
            self._frame = self._zstd.decompressobj()
        self._out = memoryview(self._frame.decompress(data))
        if self._frame.eof:
            self._rest, self._frame = self._frame.unused_data, None
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not len(self._out):
            if not self._fill():
                return 0
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._src.close()
        super().close()


def open_binary(path: Path, compression: str | None) -> BinaryIO:
    """A buffered binary stream over the decompressed bytes (compression: None, 'gzip' or 'zstd')."""
    if compression == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if compression == "zstd":
        return io.BufferedReader(ZstdFrames(path), CHUNK)  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115 (the caller closes it)


def file_errors(kind: str, comp: str | None) -> tuple[type[BaseException], ...]:
    """The exceptions that mean "this file is damaged or unreadable" for its format."""
    errors: list[type[BaseException]] = [OSError, EOFError, zlib.error]
    if comp == "zstd":
        import zstandard

        errors.append(zstandard.ZstdError)
    if kind == "parquet":
        import pyarrow

        errors.append(pyarrow.ArrowException)
    return tuple(errors)


def damage_reason(err: BaseException, kind: str, comp: str | None) -> str:
    """One line saying why a file could not be read, e.g. 'truncated zstd stream (...)'."""
    detail = " ".join(str(err).split()) or type(err).__name__
    codec = comp or kind
    if isinstance(err, EOFError):
        return f"truncated {codec} stream ({detail})"
    if kind == "parquet" and not isinstance(err, OSError):
        return f"unreadable parquet file ({detail})"
    if comp is not None and not (isinstance(err, OSError) and err.errno is not None):
        return f"corrupt {codec} stream ({detail})"  # BadGzipFile (an OSError without errno), zlib, zstd errors
    return f"cannot read the file ({detail})"
