"""The index's catalogue: chunks, their texts, vectors and sources in one SQLite file (Python's own sqlite3).

SQLite commits a whole source (its chunks, vectors and mentions) in one transaction, so a build killed at any
moment (SIGKILL included) leaves the sources committed before it and nothing of the one in flight: re-running the
build adds exactly what is missing. Identical chunks are stored once (keyed by their text's hash) and *mentioned*
by every source that contains them; a chunk goes when its last mention does. `generation` counts commits, so
derived files (the vector index, BM25) know whether they are stale.
"""

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmforge.common.errors import LmforgeError

FORMAT = "lmforge-rag-index"
VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sources (source TEXT PRIMARY KEY, sha256 TEXT NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE chunks (id INTEGER PRIMARY KEY, hash TEXT UNIQUE NOT NULL, text TEXT NOT NULL, vector BLOB NOT NULL);
CREATE TABLE mentions (source TEXT NOT NULL, ord INTEGER NOT NULL, chunk INTEGER NOT NULL, doc TEXT NOT NULL,
                       start INTEGER NOT NULL, end INTEGER NOT NULL, PRIMARY KEY (source, ord));
CREATE INDEX mentions_chunk ON mentions (chunk);
"""


@dataclass(frozen=True)
class Mention:
    chunk: int
    source: str
    doc: str
    start: int
    end: int


class Catalog:
    def __init__(self, path: Path, create_meta: dict[str, str] | None = None):
        """Open `path`; with `create_meta`, create it (with these settings) when it does not exist."""
        self.path = path
        if not path.exists() and create_meta is None:
            raise LmforgeError(f"{path.parent} is not an lmforge RAG index (no {path.name}); build one with "
                               "`lmforge rag index DOCS... --out INDEX`")
        try:
            # explicit BEGIN/COMMIT below; callers serialise access (the server threads share a Retriever lock)
            self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            # no table yet: a new file, or one whose creating transaction was killed (SQLite rolled it back)
            fresh = self.db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'").fetchone()[0] == 0
            if fresh and create_meta is not None:
                with self.transaction():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self.db.execute(statement)
                    rows = {"format": FORMAT, "version": str(VERSION), "generation": "0", **create_meta}
                    self.db.executemany("INSERT INTO meta VALUES (?, ?)", rows.items())
            self.meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as err:
            raise LmforgeError(f"{path} is not an lmforge RAG index (corrupt or foreign file: {err})") from None
        if self.meta.get("format") != FORMAT:
            raise LmforgeError(f"{path} is not an lmforge RAG index (format {self.meta.get('format')!r})")
        if self.meta.get("version") != str(VERSION):
            raise LmforgeError(f"{path} is an lmforge RAG index of version {self.meta.get('version')}; this lmforge "
                               f"reads version {VERSION}: rebuild it")

    def transaction(self):
        return _Transaction(self.db)

    @property
    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def sources(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT source, sha256 FROM sources").fetchall())

    def add_source(self, source: str, sha256: str, mentions: list[tuple[str, int, int, str, str]],
                   vectors: np.ndarray) -> list[int]:
        """Inside a transaction: record `source` and its chunks ((doc, start, end, text, hash) with one vector
        each); returns the ids of the chunks that were new (the others were already stored)."""
        new = []
        for ord_, ((doc, start, end, text, digest), vector) in enumerate(zip(mentions, vectors, strict=True)):
            row = self.db.execute("SELECT id FROM chunks WHERE hash=?", (digest,)).fetchone()
            if row is None:
                cur = self.db.execute("INSERT INTO chunks (hash, text, vector) VALUES (?, ?, ?)",
                                      (digest, text, np.ascontiguousarray(vector, dtype="<f4").tobytes()))
                row = (cur.lastrowid,)
                new.append(cur.lastrowid)
            self.db.execute("INSERT INTO mentions VALUES (?, ?, ?, ?, ?, ?)", (source, ord_, row[0], doc, start, end))
        self.db.execute("INSERT INTO sources VALUES (?, ?, ?)", (source, sha256, len(mentions)))
        self._bump()
        return new

    def delete_source(self, source: str) -> list[int]:
        """Inside a transaction: forget `source`; returns the ids of the chunks no source mentions any more."""
        chunk_ids = [r[0] for r in self.db.execute("SELECT DISTINCT chunk FROM mentions WHERE source=?", (source,))]
        self.db.execute("DELETE FROM mentions WHERE source=?", (source,))
        self.db.execute("DELETE FROM sources WHERE source=?", (source,))
        orphans = [c for c in chunk_ids
                   if self.db.execute("SELECT 1 FROM mentions WHERE chunk=? LIMIT 1", (c,)).fetchone() is None]
        self.db.executemany("DELETE FROM chunks WHERE id=?", [(c,) for c in orphans])
        self._bump()
        return orphans

    def _bump(self) -> None:
        self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def all_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids [N] int64, vectors [N, dim] float32) in id order."""
        rows = self.db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
        return ids, vectors

    def all_texts(self) -> tuple[list[int], list[str]]:
        rows = self.db.execute("SELECT id, text FROM chunks ORDER BY id").fetchall()
        return [r[0] for r in rows], [r[1] for r in rows]

    def texts(self, ids: list[int]) -> dict[int, str]:
        marks = ",".join("?" * len(ids))
        return dict(self.db.execute(f"SELECT id, text FROM chunks WHERE id IN ({marks})", ids).fetchall())

    def first_mentions(self, ids: list[int]) -> dict[int, Mention]:
        """Where each chunk was first seen (the smallest source, then position)."""
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT chunk, source, doc, start, end FROM mentions WHERE chunk IN ({marks}) "
                               "ORDER BY source DESC, ord DESC", ids).fetchall()
        return {r[0]: Mention(*r) for r in rows}  # later rows overwrite: the first mention wins

    def fingerprint(self) -> str:
        """A digest of everything the index holds (chunks, vectors, mentions, sources), for equality checks."""
        digest = hashlib.sha256()
        for query in ("SELECT id, hash, text, vector FROM chunks ORDER BY id",
                      "SELECT * FROM mentions ORDER BY source, ord", "SELECT * FROM sources ORDER BY source"):
            for row in self.db.execute(query):
                digest.update(repr(row).encode())
        return digest.hexdigest()

    def close(self) -> None:
        self.db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, kind, value, tb):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False
