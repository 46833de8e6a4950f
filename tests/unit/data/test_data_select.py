"""`lmforge data select`: each selector on a toy set whose right answer is known (K-Center-Greedy picks the spread-out
points and never a duplicate while distinct rows remain; DEITA's filter skips near neighbours of kept rows), the
model scores checked against an independent one-row-at-a-time computation (perplexity lowest kept, reward highest
kept), determinism, and one-line errors for bad input."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmforge.common.errors import LmforgeError
from lmforge.data.select import k_center_greedy, keep_count, kmeans, quality_diversity, random_k, stratified, top_k
from tests.cli_util import assert_user_error
from tests.inprocess_cli import run_main
from tests.tiny_lm import tiny_lm

WORDS = ("cat", "dog", "hen", "owl", "bee", "ant", "elk", "fox")


def _conv(i: int) -> dict:
    word = WORDS[i % len(WORDS)]
    answer = " ".join([word] * (1 + i % 3))
    return {"messages": [{"role": "user", "content": f"Say {word} {1 + i % 3} times."},
                         {"role": "assistant", "content": answer}]}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("select") / "tiny"
    tiny_lm().save(path)
    return path


def test_k_center_greedy_picks_the_spread_out_points():
    rng = np.random.default_rng(0)
    corners = np.array([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    points = np.concatenate([rng.normal(0, 0.1, (50, 2)), corners])  # a dense blob and four far corners
    chosen = k_center_greedy(points, 5)
    assert set(chosen[:4].tolist()) == {50, 51, 52, 53} and chosen[4] < 50
    clusters = np.concatenate([rng.normal(c, 0.2, (20, 2)) for c in ([0, 0], [10, 0], [0, 10])])
    assert sorted(set(k_center_greedy(clusters, 3) // 20)) == [0, 1, 2]  # one point of each cluster
    assert k_center_greedy(clusters, 3).tolist() == k_center_greedy(clusters, 3).tolist()


def test_quality_diversity_skips_near_neighbours_of_kept_rows():
    vectors = [[1.0, 0.0], [0.99, 0.01], [0.0, 1.0], [0.7, 0.7]]
    chosen, filled = quality_diversity([4.0, 3.0, 2.0, 1.0], vectors, 2, max_similarity=0.9)
    assert chosen.tolist() == [0, 2] and filled == 0  # row 1 (second best) is a near copy of row 0
    chosen, filled = quality_diversity([4.0, 3.0, 2.0, 1.0], [[1.0, 0.0]] * 4, 3)
    assert chosen.tolist() == [0, 1, 2] and filled == 2  # all copies: the best-scored skipped rows fill the budget


def test_stratified_keeps_each_cluster_its_share_ranked_inside_it():
    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (10, 2))])
    labels = kmeans(vectors, 2, seed=0)
    assert len(set(labels[:30])) == len(set(labels[30:])) == 1 and labels[0] != labels[30]  # the two blobs
    scores = np.r_[np.arange(30) + 100.0, np.arange(10)]  # the big blob scores higher: a pool-wide top 8 is all its
    chosen = stratified(labels, 8, lambda rows, n: top_k(scores[rows], n))
    assert sorted(chosen.tolist()) == [24, 25, 26, 27, 28, 29, 38, 39]  # 6 of 30 and 2 of 10, the best of each


def test_top_k_random_k_and_keep_count():
    assert top_k([1.0, 3.0, 3.0, float("nan"), 2.0], 3).tolist() == [1, 2, 4]  # tie -> earlier row; nan last
    assert random_k(100, 30, seed=1).tolist() == random_k(100, 30, seed=1).tolist() != random_k(100, 30, 2).tolist()
    assert (keep_count(10, 0.3), keep_count(10, 4), keep_count(10, 50), keep_count(3, 0.01)) == (3, 4, 10, 1)
    for bad in (0, -1, 2.5):
        with pytest.raises(LmforgeError, match="--keep"):
            keep_count(10, bad)


def test_kcenter_cli_never_keeps_a_duplicate_while_distinct_rows_remain(model_dir, tmp_path, capsys):
    rows = [_conv(i) for i in (0, 1, 2)] * 4  # three distinct conversations, each four times
    src = _write(tmp_path / "in.jsonl", rows)
    args = ("data", "select", src, "--by", "kcenter", "--keep", "3", "--model", model_dir, "-q")
    result = run_main(capsys, *args, "--out", tmp_path / "a.jsonl")
    assert result.returncode == 0, result.stderr
    assert "kept 3 of 12 rows" in result.stdout
    kept = _read(tmp_path / "a.jsonl")
    assert sorted(json.dumps(r) for r in kept) == sorted(json.dumps(r) for r in rows[:3])
    assert run_main(capsys, *args, "--out", tmp_path / "b.jsonl").returncode == 0  # deterministic
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def _perplexity_alone(lm, messages) -> float:
    """Perplexity of the assistant tokens, one conversation at a time, no padding (the independent reference)."""
    from lmforge.train.post.sft_mask import tokenize_conversation

    t = tokenize_conversation(lm.tokenizer, messages)
    ids, labels = torch.tensor([t.ids]), torch.tensor(t.labels[1:])
    with torch.no_grad():
        logits = lm.model(ids)[0, :-1].float()
    keep = labels != -100
    return math.exp(float(F.cross_entropy(logits[keep], labels[keep])))


def test_perplexity_cli_keeps_the_lowest(model_dir, tmp_path, capsys):
    from lmforge.formats.loader import load

    rows = [_conv(i) for i in range(10)]
    src = _write(tmp_path / "in.jsonl", rows)
    result = run_main(capsys, "data", "select", src, "--by", "perplexity", "--keep", "0.4", "--model", model_dir,
                      "--batch-size", "3", "--out", tmp_path / "out.jsonl", "--scores", tmp_path / "s.jsonl", "-q")
    assert result.returncode == 0, result.stderr
    lm = load(str(model_dir))
    reference = [_perplexity_alone(lm, r["messages"]) for r in rows]
    scores = _read(tmp_path / "s.jsonl")
    assert np.allclose([s["score"] for s in scores], reference, rtol=1e-4)  # batched, padded == one at a time
    lowest = sorted(np.argsort(reference)[:4].tolist())
    assert _read(tmp_path / "out.jsonl") == [rows[i] for i in lowest]
    assert [s["row"] for s in scores if s["kept"]] == lowest


def test_dedup_drops_copies_before_selecting_and_keeps_case(model_dir, tmp_path, capsys):
    from lmforge.formats.loader import load

    upper = {"messages": [{"role": "user", "content": "Say dog 2 times."}, {"role": "assistant", "content": "DOG DOG"}]}
    distinct = [_conv(i) for i in range(6)] + [upper]  # "DOG DOG" is not a copy of "dog dog": case is the answer
    rows = distinct[:3] + [_conv(0)] * 3 + distinct[3:] + [{"messages": [{**m, "content": f" {m['content']}  "}
                                                            for m in _conv(4)["messages"]]}]  # spaces only differ
    src = _write(tmp_path / "in.jsonl", rows)
    result = run_main(capsys, "data", "select", src, "--by", "perplexity", "--keep", "5", "--model", model_dir,
                      "--dedup", "--out", tmp_path / "out.jsonl", "--scores", tmp_path / "s.jsonl", "-q")
    assert result.returncode == 0, result.stderr
    assert "kept 5 of 11 rows" in result.stdout and "4 exact copies dropped first" in result.stdout
    lm = load(str(model_dir))
    reference = [_perplexity_alone(lm, r["messages"]) for r in distinct]
    kept = _read(tmp_path / "out.jsonl")
    assert kept == [distinct[i] for i in sorted(np.argsort(reference)[:5].tolist())]  # the 5 lowest distinct rows
    scores = _read(tmp_path / "s.jsonl")
    assert len(scores) == 11 and [s["copy_of"] for s in scores if "copy_of" in s] == [0, 0, 0, 7]


def test_reward_cli_keeps_the_highest_reward(model_dir, tmp_path, capsys):
    from lmforge.formats.loader import load
    from lmforge.train.post.reward_model import load_reward_model, save_reward_model
    from lmforge.train.post.value_head import ScalarHead

    lm = load(str(model_dir))
    head = ScalarHead(lm.model)
    torch.nn.init.normal_(head.score.weight, std=1.0)
    save_reward_model(head, lm.tokenizer, tmp_path / "rm")
    rows = [_conv(i) for i in range(8)]
    src = _write(tmp_path / "in.jsonl", rows)
    result = run_main(capsys, "data", "select", src, "--by", "reward", "--keep", "0.25", "--reward-model",
                      tmp_path / "rm", "--out", tmp_path / "out.jsonl", "-q")
    assert result.returncode == 0, result.stderr
    rm = load_reward_model(tmp_path / "rm")
    reward = [float(rm.score([r["messages"][:1]], [r["messages"][1]["content"]])[0]) for r in rows]
    best = sorted(np.argsort(reward)[::-1][:2].tolist())
    assert _read(tmp_path / "out.jsonl") == [rows[i] for i in best]
    assert "reward of kept rows" in result.stdout


def test_quality_diversity_cli_keeps_no_copy(model_dir, tmp_path, capsys):
    rows = [_conv(i) for i in range(6)] * 3
    src = _write(tmp_path / "in.jsonl", rows)
    result = run_main(capsys, "data", "select", src, "--by", "quality-diversity", "--keep", "6", "--model", model_dir,
                      "--max-similarity", "0.999", "--out", tmp_path / "out.jsonl", "-q")
    assert result.returncode == 0, result.stderr
    kept = [json.dumps(r) for r in _read(tmp_path / "out.jsonl")]
    assert len(kept) == len(set(kept)) == 6  # the six distinct rows, no copy of a kept one


def test_bad_input_is_a_one_line_error(model_dir, tmp_path, capsys):
    src = _write(tmp_path / "in.jsonl", [_conv(0), _conv(1)])
    base = ("data", "select", src, "--out", tmp_path / "o.jsonl")
    assert_user_error(run_main(capsys, *base, "--by", "magic"), "--by 'magic'", "kcenter")
    assert_user_error(run_main(capsys, *base, "--by", "perplexity"), "--by perplexity needs --model")
    assert_user_error(run_main(capsys, *base, "--by", "reward"), "--reward-model")
    assert_user_error(run_main(capsys, *base, "--by", "quality-diversity", "--reward-model", tmp_path),
                      "--by quality-diversity needs --model")
    assert_user_error(run_main(capsys, *base, "--by", "random", "--keep", "0"), "--keep 0")
    assert_user_error(run_main(capsys, *base, "--by", "random", "--strata", "4"), "--strata does not apply")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_conv(0)) + "\n{not json\n")
    assert_user_error(run_main(capsys, "data", "select", bad, "--out", tmp_path / "o.jsonl", "--by", "random"),
                      "line 2", "not valid JSON")
    assert_user_error(run_main(capsys, "data", "select", tmp_path / "none.jsonl", "--out", tmp_path / "o.jsonl",
                               "--by", "random"), "not found")
    assert_user_error(run_main(capsys, *base, "--by", "reward", "--reward-model", tmp_path), "score_head")
