"""Streaming readers for .txt, .jsonl (plain, .gz, .zst) and .parquet files, directories and globs.

Documents are yielded one at a time (parquet in small record batches), so memory stays bounded whatever
the corpus size. Bad lines (malformed JSON, undecodable bytes, no text, unpaired surrogates) are counted in
`ReadStats`; a file that cannot be read to its end (corrupt or truncated gzip/zstd, junk parquet) raises
`BadInput` for its caller to report. With `strict`, the first bad line raises `BadInput` too.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.compressed import damage_reason, file_errors, open_binary
from lmforge.data.document import Document
from lmforge.data.manifest import MANIFEST_FILE, manifest_files

JSONL_SUFFIXES = (".jsonl", ".ndjson")
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
TXT_UNITS = ("file", "line")
LINE_PROBLEMS = {"malformed_json": "malformed JSON", "undecodable": "bytes that are not UTF-8",
                 "missing_text": "no text field", "invalid_unicode": "an unpaired surrogate escape (not Unicode)"}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # \ud800-\udfff: only valid as a high+low pair


class BadInput(LmforgeError):
    """An input file that cannot be read to its end, or (strict) the first bad line; `reason` says why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"bad input {where}: {reason}")
        self.where, self.reason = where, reason


@dataclass(frozen=True)
class ReaderConfig:
    """How to read input files.

    text_field: the JSON/parquet field holding the text. id_field: the field holding a document id
    (absent ids become `file:line`). txt_unit: a .txt file is one document ("file") or one per line ("line").
    parquet_batch: rows per parquet record batch (bounds memory). strict: stop at the first bad line or file
    (raise `BadInput`) instead of counting it and going on.
    """

    text_field: str = "text"
    id_field: str = "id"
    txt_unit: str = "file"
    parquet_batch: int = 1024
    strict: bool = False

    def __post_init__(self) -> None:
        if not self.text_field:
            raise ConfigError("text_field must be a non-empty field name")
        if self.txt_unit not in TXT_UNITS:
            raise ConfigError(f"txt_unit={self.txt_unit!r} is not allowed; use one of {TXT_UNITS}")
        if self.parquet_batch < 1:
            raise ConfigError(f"parquet_batch={self.parquet_batch} must be >= 1")
        if not isinstance(self.strict, bool):
            raise ConfigError(f"strict={self.strict!r} must be true or false")


@dataclass
class ReadStats:
    """What the readers met: records read, the bad lines they skipped (or repaired) and counted, with the
    first 20 as examples, and every bad file with its reason (`bad_files`: {file, reason})."""

    files: int = 0
    records: int = 0
    bytes: int = 0
    malformed_json: int = 0
    undecodable: int = 0
    missing_text: int = 0
    invalid_unicode: int = 0
    examples: list[str] = field(default_factory=list)
    bad_files: list[dict[str, str]] = field(default_factory=list)

    def note(self, kind: str, where: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 20:
            self.examples.append(f"{kind} at {where}")

    @classmethod
    def of_bad_file(cls, path: Path, reason: str) -> ReadStats:
        """The statistics of a file reported bad: nothing read from it counts (its documents are dropped)."""
        return cls(files=1, bad_files=[{"file": str(path), "reason": reason}])

    def merge(self, other: ReadStats) -> None:
        for key in ("files", "records", "bytes", *LINE_PROBLEMS):
            setattr(self, key, getattr(self, key) + getattr(other, key))
        self.examples.extend(other.examples[: max(0, 20 - len(self.examples))])
        self.bad_files.extend(other.bad_files)

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
            found.update(_scan_dir(path))
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


def _scan_dir(path: Path) -> set[Path]:
    """The readable files under a directory; in a folder with an lmforge manifest (a pipeline's data/), only
    the shards it lists."""
    found = {p for p in path.rglob("*") if p.is_file() and file_kind(p)[0] != "unknown"}
    for manifest in path.rglob(MANIFEST_FILE):
        listed = manifest_files(manifest.parent)
        if listed is not None:
            found = {p for p in found if p.parent != manifest.parent} | set(listed)
    return found


def _bad_line(kind: str, where: str, cfg: ReaderConfig, stats: ReadStats, detail: str = "") -> None:
    """Count a bad line, or (strict) stop at it."""
    if cfg.strict:
        raise BadInput(where, LINE_PROBLEMS[kind] + (f" ({detail})" if detail else ""))
    stats.note(kind, where)


def _decode(raw: bytes, stats: ReadStats, where: str, cfg: ReaderConfig) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        _bad_line("undecodable", where, cfg, stats, str(err))
        return None


def _not_unicode(line: str, record: object) -> bool:
    """True if the JSON line decoded to a string with a lone surrogate, which no UTF-8 output can hold."""
    if not _SURROGATE_ESCAPE.search(line):  # a valid UTF-8 line holds surrogates only as \u escapes
        return False
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _read_jsonl(path: Path, comp: str | None, cfg: ReaderConfig, stats: ReadStats) -> Iterator[Document]:
    with open_binary(path, comp) as fh:
        for line_no, raw in enumerate(fh, start=1):
            where = f"{path.name}:{line_no}"
            if not raw.strip():
                continue
            line = _decode(raw, stats, where, cfg)  # an undecodable JSON line is skipped: its fields are unsafe
            if line is None:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                _bad_line("malformed_json", where, cfg, stats, str(err))
                continue
            if not isinstance(record, dict) or not isinstance(record.get(cfg.text_field), str):
                _bad_line("missing_text", where, cfg, stats, f"no string field {cfg.text_field!r}")
                continue
            if _not_unicode(line, record):
                _bad_line("invalid_unicode", where, cfg, stats)
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
            text = _decode(raw, stats, path.name, cfg)
            stats.records += 1
            stats.bytes += len(raw)
            yield Document(path.name, text if text is not None else raw.decode("utf-8", "replace"))
            return
        for line_no, raw in enumerate(fh, start=1):
            where = f"{path.name}:{line_no}"
            text = _decode(raw, stats, where, cfg)
            text = (text if text is not None else raw.decode("utf-8", "replace")).rstrip("\r\n")
            if text.strip():
                stats.records += 1
                stats.bytes += len(raw)
                yield Document(where, text)


def _read_parquet(path: Path, cfg: ReaderConfig, stats: ReadStats) -> Iterator[Document]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if cfg.text_field not in pf.schema_arrow.names:
        raise BadInput(str(path), f"no column {cfg.text_field!r} (columns: {pf.schema_arrow.names})")
    row = 0
    for batch in pf.iter_batches(batch_size=cfg.parquet_batch):
        for record in batch.to_pylist():
            row += 1
            text = record.pop(cfg.text_field)
            if not isinstance(text, str):
                _bad_line("missing_text", f"{path.name}:row{row}", cfg, stats, f"{cfg.text_field!r} is not a string")
                continue
            doc_id = record.get(cfg.id_field)
            stats.records += 1
            stats.bytes += len(text.encode("utf-8"))
            yield Document(str(doc_id) if doc_id is not None else f"{path.name}:{row}", text, record)


def read_file(path: Path, cfg: ReaderConfig, stats: ReadStats) -> Iterator[Document]:
    """Stream the documents of one file, counting bad lines into `stats`. A file that is damaged (corrupt or
    truncated stream, junk parquet) or unreadable raises `BadInput` where the damage is met: documents
    yielded before it came from a file that is bad, and the caller decides what to do with them."""
    kind, comp = file_kind(path)
    stats.files += 1
    if kind == "jsonl":
        documents = _read_jsonl(path, comp, cfg, stats)
    elif kind == "txt":
        documents = _read_txt(path, comp, cfg, stats)
    elif kind == "parquet":
        documents = _read_parquet(path, cfg, stats)
    else:
        raise LmforgeError(f"unsupported input file {str(path)!r}; allowed: .txt, .jsonl[.gz|.zst], .parquet")
    try:
        yield from documents
    except file_errors(kind, comp) as err:
        raise BadInput(str(path), damage_reason(err, kind, comp)) from err


def read_documents(
    patterns: list[str] | str, cfg: ReaderConfig | None = None, stats: ReadStats | None = None
) -> Iterator[Document]:
    """Stream every document of every file matched by `patterns` (paths, directories, globs)."""
    cfg = cfg or ReaderConfig()
    stats = stats if stats is not None else ReadStats()
    for path in expand_inputs(patterns):
        yield from read_file(path, cfg, stats)
