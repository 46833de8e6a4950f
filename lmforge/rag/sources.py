"""The documents of a RAG corpus: .txt / .md / .html files are one document each; .jsonl and .parquet files hold one
document per record (the data pipeline's readers, lmforge.data.readers). A *source* is one file: the unit that is
added, replaced when its bytes change, or deleted (incremental indexing, as LlamaIndex's docstore does)."""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.data.readers import BadInput, ReaderConfig, ReadStats, file_kind, read_file

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
HTML_SUFFIXES = (".html", ".htm")
ALLOWED = ".txt, .md, .rst, .html, .jsonl[.gz|.zst], .parquet"


@dataclass(frozen=True)
class SourceFile:
    path: Path
    name: str  # the absolute path: what the index records and `rag delete` takes

    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in HTML_SUFFIXES:
        return "html"
    kind, _ = file_kind(path)
    return kind if kind in ("jsonl", "parquet") else "unknown"


def find_sources(paths: list[str]) -> list[SourceFile]:
    """The files named by `paths` (files or directories searched recursively), sorted, each once."""
    found: set[Path] = set()
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and _kind(p) != "unknown")
        elif path.is_file():
            if _kind(path) == "unknown":
                raise LmforgeError(f"unsupported document {text!r}; allowed: {ALLOWED}")
            found.add(path)
        else:
            raise LmforgeError(f"no such file or directory: {text}")
    if not found:
        raise LmforgeError(f"no documents found in {', '.join(paths)}; allowed: {ALLOWED}")
    return [SourceFile(p, str(p.resolve())) for p in sorted(found, key=lambda p: str(p.resolve()))]


def read_source(source: SourceFile, text_field: str = "text") -> Iterator[tuple[str, str]]:
    """(document id, text) pairs of one source file; a damaged file is a one-line error naming it."""
    kind = _kind(source.path)
    try:
        if kind in ("text", "html"):
            raw = source.path.read_bytes().decode("utf-8", "replace")
            if kind == "html":
                from lmforge.data.html_extract import HtmlExtractConfig, HtmlExtractor

                raw = HtmlExtractor(HtmlExtractConfig(main_content=False, list_bullets=False)).extract(raw)
            yield source.path.name, raw
            return
        for doc in read_file(source.path, ReaderConfig(text_field=text_field), ReadStats()):
            yield doc.id, doc.text
    except BadInput as err:
        raise LmforgeError(f"cannot read {source.path}: {err.reason}") from None
    except OSError as err:
        raise LmforgeError(f"cannot read {source.path}: {err.strerror or err}") from None
