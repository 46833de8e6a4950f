"""Shard writers: JSONL (plain, gzip or zstd) and parquet, written atomically.

A shard is written to `<name>.tmp` and renamed on a clean close, so a finished file on disk always means a
finished shard — this is what makes re-running a pipeline idempotent.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

from lmforge.common.errors import ConfigError

OUTPUT_FORMATS = ("jsonl", "parquet")
OUTPUT_COMPRESSIONS = ("none", "gzip", "zstd")
_SUFFIX = {"none": "", "gzip": ".gz", "zstd": ".zst"}


def shard_name(stem: str, fmt: str, compression: str = "none") -> str:
    """File name of an output shard, e.g. part-00003.jsonl.zst."""
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"output format {fmt!r} is not allowed; use one of {OUTPUT_FORMATS}")
    if compression not in OUTPUT_COMPRESSIONS:
        raise ConfigError(f"compression {compression!r} is not allowed; use one of {OUTPUT_COMPRESSIONS}")
    if fmt == "parquet":
        return f"{stem}.parquet"
    return f"{stem}.jsonl{_SUFFIX[compression]}"


class JsonlWriter:
    """Writes one JSON object per line; use as a context manager."""

    def __init__(self, path: Path, compression: str = "none") -> None:
        if compression not in OUTPUT_COMPRESSIONS:
            raise ConfigError(f"compression {compression!r} is not allowed; use one of {OUTPUT_COMPRESSIONS}")
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = open(self.tmp, "wb")  # noqa: SIM115 (closed in close())
        if compression == "gzip":
            self._fh = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)
            self._raw = raw
        elif compression == "zstd":
            import zstandard

            self._fh = zstandard.ZstdCompressor(level=3).stream_writer(raw)
            self._raw = raw
        else:
            self._fh, self._raw = raw, None
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False, default=str).encode("utf-8") + b"\n")
        self.count += 1

    def close(self, commit: bool = True) -> None:
        self._fh.close()
        if self._raw is not None and not self._raw.closed:
            self._raw.close()
        if commit:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)


class ParquetWriter:
    """Writes records in row groups with a fixed schema: `id`, `text` and `meta` (the other fields as JSON).

    A fixed schema keeps shards with heterogeneous extra fields readable together.
    """

    def __init__(self, path: Path, row_group: int = 4096, text_field: str = "text") -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pa = pa
        self._schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("meta", pa.string())])
        self._writer = pq.ParquetWriter(self.tmp, self._schema)
        self._rows: list[dict[str, Any]] = []
        self._row_group = row_group
        self._text_field = text_field
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        rest = {k: v for k, v in record.items() if k not in ("id", self._text_field)}
        text = record.get(self._text_field, "")
        self._rows.append({"id": str(record.get("id", "")), "text": text, "meta": json.dumps(rest, default=str)})
        self.count += 1
        if len(self._rows) >= self._row_group:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(self._pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def close(self, commit: bool = True) -> None:
        self._flush()
        self._writer.close()
        if commit:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ParquetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(commit=exc_type is None)


def open_writer(
    path: Path, fmt: str = "jsonl", compression: str = "none", text_field: str = "text"
) -> JsonlWriter | ParquetWriter:
    """A writer for `fmt` ('jsonl' or 'parquet'); parquet ignores `compression` (it compresses itself)."""
    if fmt == "parquet":
        return ParquetWriter(path, text_field=text_field)
    if fmt == "jsonl":
        return JsonlWriter(path, compression)
    raise ConfigError(f"output format {fmt!r} is not allowed; use one of {OUTPUT_FORMATS}")
