"""Streaming readers for .txt, .jsonl (plain, .gz, .zst) and .parquet files, directories and globs.

Documents are yielded one at a time (parquet in small record batches), so memory stays bounded whatever
the corpus size. Malformed JSON lines and undecodable bytes are counted in `ReadStats`, never raised.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.document import Document

JSONL_SUFFIXES = (".jsonl", ".ndjson")
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
TXT_UNITS = ("file", "line")


@dataclass(frozen=True)
class ReaderConfig:
    """How to read input files.

    text_field: the JSON/parquet field holding the text. id_field: the field holding a document id
    (absent ids become `file:line`). txt_unit: a .txt file is one document ("file") or one per line ("line").
    parquet_batch: rows per parquet record batch (bounds memory).
    """

    text_field: str = "text"
    id_field: str = "id"
    txt_unit: str = "file"
    parquet_batch: int = 1024

    def __post_init__(self) -> None:
        if not self.text_field:
            raise ConfigError("text_field must be a non-empty field name")
        if self.txt_unit not in TXT_UNITS:
            raise ConfigError(f"txt_unit={self.txt_unit!r} is not allowed; use one of {TXT_UNITS}")
        if self.parquet_batch < 1:
            raise ConfigError(f"parquet_batch={self.parquet_batch} must be >= 1")


@dataclass
class ReadStats:
    """What the readers met: records read, and the bad input they skipped (or repaired) and counted."""

    files: int = 0
    records: int = 0
    bytes: int = 0
    malformed_json: int = 0
    undecodable: int = 0
    missing_text: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, kind: str, where: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 20:
            self.examples.append(f"{kind} at {where}")

    def merge(self, other: ReadStats) -> None:
        for key in ("files", "records", "bytes", "malformed_json", "undecodable", "missing_text"):
            setattr(self, key, getattr(self, key) + getattr(other, key))
        self.examples.extend(other.examples[: max(0, 20 - len(self.examples))])

    def to_dict(self) -> dict:
        return asdict(self)


def file_kind(path: Path) -> tuple[str, str | None]:
    """(format, compression) of a path from its suffixes, e.g. ('jsonl', 'zstd') for x.jsonl.zst."""
    name = path.name.lower()
    compression = None
    for suffix, comp in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, name = comp, name[: -len(suffix)]
            break
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl", compression
    if name.endswith(".txt"):
        return "txt", compression
    if name.endswith(".parquet") and compression is None:
        return "parquet", None
    return "unknown", compression


def expand_inputs(patterns: list[str] | str, base: Path | None = None) -> list[Path]:
    """Files named by paths, directories (searched recursively) and glob patterns, sorted and de-duplicated."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found: set[Path] = set()
    for pattern in patterns:
        path = Path(pattern)
        if base is not None and not path.is_absolute():
            path = base / path
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and file_kind(p)[0] != "unknown")
        elif path.is_file():
            found.add(path)
        else:
            matches = [Path(p) for p in glob.glob(str(path), recursive=True)]
            found.update(p for p in matches if p.is_file())
            if not matches:
                raise LmforgeError(f"input {pattern!r} matches no file, directory or glob")
    files = sorted(found)
    unknown = [str(p) for p in files if file_kind(p)[0] == "unknown"]
    if unknown:
        raise LmforgeError(f"unsupported input file {unknown[0]!r}; allowed: .txt, .jsonl[.gz|.zst], .parquet")
    return files


def open_binary(path: Path, compression: str | None) -> BinaryIO:
    """A buffered binary stream over the decompressed bytes."""
    if compression == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115 (owned by the reader)
        return io.BufferedReader(raw)  # type: ignore[arg-type]
    return open(path, "rb")  # noqa: SIM115 (the caller closes it)


def _decode(raw: bytes, stats: ReadStats, where: str) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats.note("undecodable", where)
        return None


def _read_jsonl(path: Path, comp: str | None, cfg: ReaderConfig, stats: ReadStats) -> Iterator[Document]:
    with open_binary(path, comp) as fh:
        for line_no, raw in enumerate(fh, start=1):
            where = f"{path.name}:{line_no}"
            if not raw.strip():
                continue
            line = _decode(raw, stats, where)  # an undecodable JSON line is skipped: its fields are unsafe
            if line is None:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                stats.note("malformed_json", where)
                continue
            if not isinstance(record, dict) or not isinstance(record.get(cfg.text_field), str):
                stats.note("missing_text", where)
                continue
            text = record.pop(cfg.text_field)
            doc_id = record.get(cfg.id_field)
            stats.records += 1
            stats.bytes += len(raw)
            yield Document(str(doc_id) if doc_id is not None else where, text, record)


def _read_txt(path: Path, comp: str | None, cfg: ReaderConfig, stats: ReadStats) -> Iterator[Document]:
    # Undecodable bytes in plain text are replaced by U+FFFD (and counted): one bad byte should not
    # silently remove a whole book.
    with open_binary(path, comp) as fh:
        if cfg.txt_unit == "file":
            raw = fh.read()
            text = _decode(raw, stats, path.name)
            stats.records += 1
            stats.bytes += len(raw)
            yield Document(path.name, text if text is not None else raw.decode("utf-8", "replace"))
            return
        for line_no, raw in enumerate(fh, start=1):
            where = f"{path.name}:{line_no}"
            text = _decode(raw, stats, where)
            text = (text if text is not None else raw.decode("utf-8", "replace")).rstrip("\r\n")
            if text.strip():
                stats.records += 1
                stats.bytes += len(raw)
                yield Document(where, text)


def _read_parquet(path: Path, cfg: ReaderConfig, stats: ReadStats) -> Iterator[Document]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if cfg.text_field not in pf.schema_arrow.names:
        raise LmforgeError(
            f"parquet file {str(path)!r} has no column {cfg.text_field!r}; columns: {pf.schema_arrow.names}"
        )
    row = 0
    for batch in pf.iter_batches(batch_size=cfg.parquet_batch):
        for record in batch.to_pylist():
            row += 1
            text = record.pop(cfg.text_field)
            if not isinstance(text, str):
                stats.note("missing_text", f"{path.name}:row{row}")
                continue
            doc_id = record.get(cfg.id_field)
            stats.records += 1
            stats.bytes += len(text.encode("utf-8"))
            yield Document(str(doc_id) if doc_id is not None else f"{path.name}:{row}", text, record)


def read_file(path: Path, cfg: ReaderConfig, stats: ReadStats) -> Iterator[Document]:
    """Stream the documents of one file, counting problems into `stats`."""
    kind, comp = file_kind(path)
    stats.files += 1
    if kind == "jsonl":
        yield from _read_jsonl(path, comp, cfg, stats)
    elif kind == "txt":
        yield from _read_txt(path, comp, cfg, stats)
    elif kind == "parquet":
        yield from _read_parquet(path, cfg, stats)
    else:
        raise LmforgeError(f"unsupported input file {str(path)!r}; allowed: .txt, .jsonl[.gz|.zst], .parquet")


def read_documents(
    patterns: list[str] | str, cfg: ReaderConfig | None = None, stats: ReadStats | None = None
) -> Iterator[Document]:
    """Stream every document of every file matched by `patterns` (paths, directories, globs)."""
    cfg = cfg or ReaderConfig()
    stats = stats if stats is not None else ReadStats()
    for path in expand_inputs(patterns):
        yield from read_file(path, cfg, stats)
