"""Exact and MinHash LSH dedup, measured against the sample generator's ground truth."""

import random

import numpy as np
import pytest

from lmforge.common.errors import ConfigError
from lmforge.data.exact_dedup import ExactDedup
from lmforge.data.minhash import MinHashConfig, MinHashDeduper, UnionFind
from lmforge.data.sample_corpus import SampleConfig, generate, jaccard, shingle_set
from lmforge.data.sample_text import prose


@pytest.fixture(scope="module")
def corpus():
    docs, truth = generate(SampleConfig(seed=7, good=400, near_duplicates=80, exact_duplicates=40))
    return docs, truth


def test_exact_dedup_finds_every_planted_copy(corpus):
    docs, truth = corpus
    removed = ExactDedup().find_removals(d["text"] for d in docs)
    planted = {i for i, t in enumerate(truth) if t["exact_dup_of"]}
    assert planted <= set(removed)  # every copy (verbatim, extra spaces, trailing newline) is found
    assert all(truth[i]["kind"].startswith("spam:") for i in set(removed) - planted)  # templated spam repeats
    assert all(reason == "exact_dedup:duplicate" for reason in removed.values())


def test_exact_dedup_normalises_case_and_space():
    dedup = ExactDedup()
    texts = ["Hello  World", "hello world\n", "hello, world", "Hello World"]
    assert dedup.find_removals(texts) == {1: "exact_dedup:duplicate", 3: "exact_dedup:duplicate"}


def test_signature_agreement_estimates_jaccard():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(3000)]
    base = [vocab[i] for i in rng.integers(0, 3000, 400)]
    deduper = MinHashDeduper(MinHashConfig(bands=32, rows=8))
    errors = []
    for edits in (5, 15, 30, 60):
        other = list(base)
        for pos in rng.choice(400, edits, replace=False):
            other[pos] = "zz" + str(pos)
        a, b = " ".join(base), " ".join(other)
        sig = deduper.signatures([a, b])
        errors.append(abs(np.mean(sig[0] == sig[1]) - jaccard(a, b)))
    assert max(errors) < 0.1  # 256 permutations: standard error about 0.03


def test_near_dup_recall_and_false_positive_rate(corpus):
    docs, truth = corpus
    deduper = MinHashDeduper()
    sig = deduper.signatures(d["text"] for d in docs)
    roots = deduper.clusters(sig)
    index = {t["id"]: i for i, t in enumerate(truth)}
    pairs = [(index[t["near_dup_of"]], i, t["jaccard"]) for i, t in enumerate(truth) if t["near_dup_of"]]
    assert len(pairs) == 80 and all(j >= 0.8 for _, _, j in pairs)
    for a, b, j in pairs[:10]:  # the recorded Jaccard is the true one
        assert jaccard(docs[a]["text"], docs[b]["text"]) == pytest.approx(j, abs=1e-4)
    recall = np.mean([roots[a] == roots[b] for a, b, _ in pairs])
    assert recall >= 0.95
    # documents with no planted duplicate (good prose and foreign pages; spam templates may truly repeat)
    involved = {i for a, b, _ in pairs for i in (a, b)}
    involved |= {i for i, t in enumerate(truth) if t["exact_dup_of"]}
    involved |= {index[t["exact_dup_of"]] for t in truth if t["exact_dup_of"]}
    clean = [i for i, t in enumerate(truth) if i not in involved and t["kind"] in ("good", "foreign")]
    sizes = np.bincount(roots, minlength=len(roots))
    false_positive_rate = np.mean([sizes[roots[i]] > 1 for i in clean])
    assert false_positive_rate <= 0.01


def test_find_removals_keeps_first_of_each_cluster():
    words = " ".join(f"token{i}" for i in range(200))
    near = words.replace("token100", "other")
    texts = [words, "something entirely different and unrelated to the rest", near, words, ""]
    removals = MinHashDeduper().find_removals(texts)
    assert removals == {2: "minhash_dedup:near_duplicate", 3: "minhash_dedup:near_duplicate"}


def test_short_and_chinese_texts_are_shingled():
    deduper = MinHashDeduper()
    assert len(deduper.shingle_hashes(deduper.word_hashes("just three words"))) == 1
    zh = prose("zh", random.Random(3), 3, 5)
    assert len(shingle_set(zh)) > 100  # characters, not one giant token
    edited = zh[:100] + "变" + zh[101:]
    assert jaccard(zh, edited) > 0.9
    assert MinHashDeduper().find_removals([zh, edited]) == {1: "minhash_dedup:near_duplicate"}


def test_band_layout_controls_sensitivity():
    # With 1 band of 112 rows only identical signatures collide; a 0.85-Jaccard pair is not merged.
    words = " ".join(f"t{i}" for i in range(300))
    near = " ".join(f"t{i}" if i % 60 else "x" for i in range(300))
    assert 0.7 < jaccard(words, near) < 0.95
    assert MinHashDeduper(MinHashConfig(bands=1, rows=112)).find_removals([words, near]) == {}
    assert MinHashDeduper(MinHashConfig(bands=28, rows=4)).find_removals([words, near]) == {
        1: "minhash_dedup:near_duplicate"}


def test_min_similarity_verification_rejects_weak_candidates():
    words = " ".join(f"t{i}" for i in range(300))
    near = " ".join(f"t{i}" if i % 60 else "x" for i in range(300))
    strict = MinHashDeduper(MinHashConfig(bands=28, rows=4, min_similarity=0.99))
    assert strict.find_removals([words, near]) == {}


def test_union_find_merges_transitively():
    uf = UnionFind(5)
    uf.union(3, 4)
    uf.union(4, 1)
    assert [uf.find(i) for i in range(5)] == [0, 1, 2, 1, 1]


def test_config_validation():
    with pytest.raises(ConfigError, match="bands=0"):
        MinHashConfig(bands=0)
    assert MinHashConfig().num_perm == 112
