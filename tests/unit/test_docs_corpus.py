"""benchmarks/docs_corpus.py: the natural-text corpus (the installed Python's documentation) that
benchmarks/quant_quality.py --preset lm-docs pretrains on, calibrates on and scores on, split by document."""

import pytest

from benchmarks import docs_corpus


@pytest.fixture(scope="module")
def corpus():
    return docs_corpus.documents()


def test_real_corpus_is_large_and_held_out_text_never_trained_on(corpus):
    sizes = docs_corpus.stats(corpus)
    # 3.11: train 1.79M characters in 589 documents, calibration 270k, held-out 202k (~55k tokens of its BPE)
    assert sizes["train"]["characters"] > 1_000_000 and sizes["train"]["documents"] > 300
    assert sizes["heldout"]["characters"] > 100_000 and sizes["calibration"]["characters"] > 100_000
    names = {split: {name for name, _ in docs} for split, docs in corpus.items()}
    assert not names["train"] & names["heldout"] and not names["train"] & names["calibration"]
    assert not names["heldout"] & names["calibration"]
    for split, docs in corpus.items():  # every document sits in the split its name hashes to
        assert all(docs_corpus.split_of(name) == split for name, _ in docs)
    train_paragraphs = {p for _, text in corpus["train"] for p in text.split("\n\n")}
    for split in ("heldout", "calibration"):  # no paragraph of held-out / calibration text was trained on
        paragraphs = [p for _, text in corpus[split] for p in text.split("\n\n")]
        assert len(paragraphs) > 1000 and not train_paragraphs & set(paragraphs)
    assert any(name.startswith("topic:") for name, _ in corpus["train"])  # the reference topics are in
    assert not any(".test." in name or name.startswith("module:test.") for s in corpus.values() for name, _ in s)


def test_split_is_a_stable_hash_and_copies_of_train_docstrings_leave_held_out(tmp_path):
    # sha256 of the name, not Python's salted hash(): the same on every machine and run
    assert [docs_corpus.split_of(f"module:{c}") for c in "amq"] == ["train", "calibration", "heldout"]
    lib = tmp_path / "lib"
    (lib / "tests").mkdir(parents=True)
    (lib / "site-packages").mkdir()
    (lib / "a.py").write_text('"""Shared text."""\ndef f():\n    """Only in a.\n\n    Shared line."""\n')  # train
    (lib / "q.py").write_text('"""Shared text."""\nclass C:\n    """Only in q.\n\n    Shared line."""\n')  # held-out
    (lib / "m.py").write_text('"""Calibration text."""\n')  # calibration
    (lib / "test_x.py").write_text('"""A test module."""\n')
    (lib / "tests" / "b.py").write_text('"""In a tests folder."""\n')
    (lib / "site-packages" / "c.py").write_text('"""Installed package."""\n')
    (lib / "broken.py").write_text("def (:\n")
    first, second = docs_corpus.documents(lib), docs_corpus.documents(lib)
    assert first == second and docs_corpus.fingerprint(first) == docs_corpus.fingerprint(second)
    modules = {split: [(n, t) for n, t in docs if n.startswith("module:")] for split, docs in first.items()}
    assert modules == {"train": [("module:a", "Shared text.\n\nOnly in a.\n\nShared line.")],
                       "calibration": [("module:m", "Calibration text.")],
                       "heldout": [("module:q", "Only in q.")]}
