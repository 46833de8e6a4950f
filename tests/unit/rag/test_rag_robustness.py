"""A RAG index survives SIGKILL mid-build (re-running ends identical to an uninterrupted build), and a corrupt or
foreign index is a one-line error, while a damaged vector file is rebuilt from the catalogue."""

import sqlite3
import sys
import time
from pathlib import Path

from lmforge.rag.index import RagIndex
from lmforge.rag.retrieval import Retriever
from tests.cli_util import assert_user_error, run_cli
from tests.kill_resume import Killable, run_command

ROOT = Path(__file__).resolve().parents[3]


def write_docs(directory: Path, n: int) -> None:
    directory.mkdir()
    for i in range(n):
        (directory / f"doc{i:03d}.txt").write_text(f"Document {i} says that the number {i * 7919 % 1000} is "
                                                   f"lucky for people named Person{i}. " * (1 + i % 3))


def index_cmd(docs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "lmforge", "rag", "index", str(docs), "--out", str(out), "--commit-every", "4",
            "--threads", "1", "--chunk-size", "32", "--chunk-overlap", "4"]


def committed_sources(out: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{out / 'catalog.sqlite'}?mode=ro", uri=True, timeout=0.1)
        try:
            return db.execute("SELECT COUNT(*) FROM sources").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_sigkill_mid_build_then_rerun_equals_uninterrupted(tmp_path):
    docs = tmp_path / "docs"
    write_docs(docs, 160)
    ref = run_command(index_cmd(docs, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    build, deadline = Killable(index_cmd(docs, tmp_path / "killed")), time.time() + 120
    while build.running() and committed_sources(tmp_path / "killed") < 40 and time.time() < deadline:
        time.sleep(0.005)
    build.kill()
    killed_at = committed_sources(tmp_path / "killed")
    assert 0 < killed_at < 160
    rerun = run_command(index_cmd(docs, tmp_path / "killed"))
    assert rerun.returncode == 0, rerun.stderr
    ref_index, resumed = RagIndex.open(tmp_path / "ref"), RagIndex.open(tmp_path / "killed")
    assert resumed.catalog.count() == ref_index.catalog.count() > 160
    assert resumed.catalog.fingerprint() == ref_index.catalog.fingerprint(), f"killed after {killed_at} sources"


def test_corrupt_and_foreign_indexes_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "catalog.sqlite").write_bytes(b"this is not a database at all" * 100)
    assert_user_error(run_cli("rag", "info", str(garbage)), "not an lmforge RAG index")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    db = sqlite3.connect(foreign / "catalog.sqlite")
    db.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    db.execute("INSERT INTO meta VALUES ('format', 'someone-else')")
    db.commit()
    db.close()
    assert_user_error(run_cli("rag", "ask", str(foreign), "what?"), "not an lmforge RAG index", "someone-else")
    other = tmp_path / "other"
    other.mkdir()
    sqlite3.connect(other / "catalog.sqlite").execute("CREATE TABLE t (x)").connection.close()
    assert_user_error(run_cli("rag", "info", str(other)), "not an lmforge RAG index")
    assert_user_error(run_cli("rag", "info", str(tmp_path / "missing")), "not an lmforge RAG index")
    (tmp_path / "file").write_text("x")
    assert_user_error(run_cli("rag", "info", str(tmp_path / "file")), "is a file")


def test_damaged_vector_file_is_rebuilt_from_the_catalogue(tmp_path, facts, minilm, capfd):
    from lmforge.rag.chunking import ChunkSpec
    from lmforge.rag.sources import find_sources

    out = tmp_path / "index"
    index = RagIndex.create_or_open(out, minilm, ChunkSpec())
    index.build(find_sources([str(facts[0] / "towns")]), minilm)
    before = Retriever(index, minilm).ranked("the main export", 5, "dense")
    (out / "vectors.usearch").write_bytes(b"\0garbage" * 50)
    again = RagIndex.open(out)
    assert Retriever(again, minilm).ranked("the main export", 5, "dense") == before
    assert "rebuilding the vector index" in capfd.readouterr().err
