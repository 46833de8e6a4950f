"""A persistent RAG index: a directory holding the catalogue (catalog.sqlite: chunks, texts, vectors, sources) and
the vector store derived from it (vectors.usearch + its stamp).

`build` reads sources, skips those whose bytes are unchanged, replaces changed ones, chunks and embeds the new
ones, and commits a fixed group of whole sources per transaction, so a killed build resumes to the same index as
an uninterrupted one. The settings that shape the vectors (embedding model, chunk size and overlap) are fixed at
creation and checked on every later build.
"""

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmforge.common.errors import LmforgeError
from lmforge.rag.catalog import Catalog
from lmforge.rag.chunking import ChunkSpec, chunk_text
from lmforge.rag.sources import SourceFile, read_source
from lmforge.rag.vectors import VectorIndex

CATALOG = "catalog.sqlite"
GROUP_SOURCES = 64  # sources chunked, embedded and committed together (one transaction)


@dataclass
class BuildStats:
    sources_added: int = 0
    sources_replaced: int = 0
    sources_unchanged: int = 0
    chunks_added: int = 0  # new chunk texts stored
    chunks_duplicate: int = 0  # chunks already stored (identical text): mentioned, not stored again
    chunks_removed: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class RagIndex:
    def __init__(self, directory: Path, catalog: Catalog):
        self.directory, self.catalog = directory, catalog
        self.dim = int(catalog.meta["dim"])
        self.spec = ChunkSpec(int(catalog.meta["chunk_size"]), int(catalog.meta["chunk_overlap"]))
        self.embedding_model = catalog.meta["embedding_model"]
        self._vectors: VectorIndex | None = None
        self._bm25 = None

    @classmethod
    def open(cls, directory: str | Path) -> "RagIndex":
        directory = Path(directory)
        if directory.is_file():
            raise LmforgeError(f"{directory} is a file; a RAG index is a directory made by `lmforge rag index`")
        return cls(directory, Catalog(directory / CATALOG))

    @classmethod
    def create_or_open(cls, directory: str | Path, embedder, spec: ChunkSpec) -> "RagIndex":
        """Open `directory`, or create it for this embedder and chunking; settings differing from an existing
        index's are a one-line error (its vectors would not be comparable)."""
        directory = Path(directory)
        if directory.is_file():
            raise LmforgeError(f"--out {directory} is a file; a RAG index is a directory")
        if directory.is_dir() and any(directory.iterdir()) and not (directory / CATALOG).exists():
            raise LmforgeError(f"--out {directory} is a non-empty directory that is not an lmforge RAG index")
        directory.mkdir(parents=True, exist_ok=True)
        wanted = {"embedding_model": embedder.name, "dim": str(embedder.dim), "chunk_size": str(spec.size),
                  "chunk_overlap": str(spec.overlap)}
        index = cls(directory, Catalog(directory / CATALOG, create_meta=wanted))
        differ = {k: (index.catalog.meta.get(k), v) for k, v in wanted.items() if index.catalog.meta.get(k) != v}
        if differ:
            said = ", ".join(f"{k}={old!r} (asked {new!r})" for k, (old, new) in differ.items())
            raise LmforgeError(f"{directory} was built with {said}; use the same settings or a new --out")
        return index

    # -- building ---------------------------------------------------------------------------------------------
    def build(self, sources: list[SourceFile], embedder, group: int = GROUP_SOURCES, progress=None) -> BuildStats:
        """Add new sources and replace changed ones, `group` sources per transaction. Groups are fixed slices of
        the sorted source list, so a build killed in group k and re-run redoes exactly group k with the same
        batches (bitwise the same vectors on the same threads) and ends identical to an uninterrupted build."""
        if group < 1:
            raise LmforgeError(f"group={group} must be >= 1 source per transaction")
        started, stats = time.perf_counter(), BuildStats()
        known = self.catalog.sources()
        vectors = self.vectors()  # loaded (or rebuilt) before changing anything
        for first in range(0, len(sources), group):
            todo = []
            for source in sources[first:first + group]:
                digest = source.digest()
                if known.get(source.name) == digest:
                    stats.sources_unchanged += 1
                else:
                    todo.append((source, digest, self._chunks(source, embedder)))
            if todo:
                self._commit(todo, known, embedder, vectors, stats)
            if progress is not None:
                progress(min(first + group, len(sources)), len(sources))
        if stats.sources_added or stats.sources_replaced:
            vectors.save(self.directory, self.catalog.generation)
        stats.seconds = time.perf_counter() - started
        return stats

    def _chunks(self, source: SourceFile, embedder) -> list[tuple[str, int, int, str, str]]:
        out = []
        for doc, text in read_source(source):
            encoding = embedder.backend.encode(text, add_special_tokens=False)
            for chunk in chunk_text(text, encoding.offsets, self.spec):
                out.append((doc, chunk.start, chunk.end, chunk.text, hashlib.sha256(chunk.text.encode()).hexdigest()))
        return out

    def _commit(self, pending, known: dict, embedder, vectors: VectorIndex, stats: BuildStats) -> None:
        texts = [piece[3] for _, _, pieces in pending for piece in pieces]
        embedded = embedder.embed(texts).numpy() if texts else np.zeros((0, self.dim), np.float32)
        added_ids, removed = [], []
        with self.catalog.transaction():
            row = 0
            for source, digest, pieces in pending:
                if source.name in known:
                    removed += self.catalog.delete_source(source.name)
                    stats.sources_replaced += 1
                else:
                    stats.sources_added += 1
                new = self.catalog.add_source(source.name, digest, pieces, embedded[row:row + len(pieces)])
                added_ids += new
                stats.chunks_added += len(new)
                stats.chunks_duplicate += len(pieces) - len(new)
                row += len(pieces)
                known[source.name] = digest
        vectors.remove(removed)
        stats.chunks_removed += len(removed)
        if added_ids:
            ids, vecs = self._vectors_of(added_ids)
            vectors.add(ids, vecs)
        self._bm25 = None

    def _vectors_of(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        rows = []
        for first in range(0, len(ids), 900):  # SQLite binds at most 999 variables in older builds
            part = ids[first:first + 900]
            rows += self.catalog.db.execute(f"SELECT id, vector FROM chunks WHERE id IN ({','.join('?' * len(part))})",
                                            part).fetchall()
        rows.sort()
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), self.dim)
        return np.array([r[0] for r in rows], dtype=np.int64), vecs

    def delete(self, names: list[str]) -> int:
        """Forget these sources (as `rag index` recorded them: absolute paths); returns the chunks removed."""
        known = self.catalog.sources()
        unknown = [n for n in names if n not in known and str(Path(n).resolve()) not in known]
        if unknown:
            raise LmforgeError(f"{unknown[0]!r} is not a source of this index (it has {len(known)}; "
                               "`lmforge rag info INDEX` lists them)")
        vectors = self.vectors()
        removed = []
        with self.catalog.transaction():
            for name in names:
                removed += self.catalog.delete_source(name if name in known else str(Path(name).resolve()))
        vectors.remove(removed)
        vectors.save(self.directory, self.catalog.generation)
        self._bm25 = None
        return len(removed)

    # -- searching --------------------------------------------------------------------------------------------
    def vectors(self) -> VectorIndex:
        """The vector store, loaded if its stamp matches the catalogue, else rebuilt from the catalogue."""
        if self._vectors is None:
            count, generation = self.catalog.count(), self.catalog.generation
            self._vectors = VectorIndex.load(self.directory, self.dim, generation, count)
            if self._vectors is None:
                if count:
                    print(f"lmforge: rebuilding the vector index of {self.directory} from its catalogue "
                          f"({count} chunks)", file=sys.stderr)
                self._vectors = VectorIndex(self.dim)
                self._vectors.add(*self.catalog.all_vectors(self.dim))
                self._vectors.save(self.directory, generation)
        return self._vectors

    def bm25(self):
        if self._bm25 is None:
            from lmforge.rag.bm25 import BM25

            self._bm25 = BM25(*self.catalog.all_texts())
        return self._bm25

    def close(self) -> None:
        self.catalog.close()
