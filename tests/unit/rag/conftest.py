"""Shared fixtures of the RAG tests: one all-MiniLM-L6-v2 embedder per worker, the invented-facts corpus, and an
index of it built once (the embedder is small: loading it and indexing ~80 chunks takes a few seconds)."""

import pytest

from lmforge.rag.st_dir import ENCODER_INSTALL_HINT, embedded_encoder_path


def minilm_path():
    path = embedded_encoder_path("all-minilm-l6-v2")
    if path is None:
        pytest.fail(f"all-MiniLM-L6-v2 is not installed; the RAG tests need it: {ENCODER_INSTALL_HINT}",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def minilm():
    from lmforge.rag.embedder import load_embedder

    minilm_path()
    return load_embedder("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def facts(tmp_path_factory):
    """(corpus dir, questions file) of the invented-facts set."""
    from lmforge.rag.facts import write_fact_set

    return write_fact_set(tmp_path_factory.mktemp("facts"))


@pytest.fixture(scope="session")
def facts_index(tmp_path_factory, facts, minilm):
    from lmforge.rag.chunking import ChunkSpec
    from lmforge.rag.index import RagIndex
    from lmforge.rag.sources import find_sources

    out = tmp_path_factory.mktemp("facts_index") / "index"
    index = RagIndex.create_or_open(out, minilm, ChunkSpec())
    index.build(find_sources([str(facts[0])]), minilm)
    return index
