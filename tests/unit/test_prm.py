"""Process reward models (issue 30, item 5): the step-wise task's labels follow its arithmetic, `lmforge prm train`
trains a per-step head through the Trainer (held-out figures before / after, OUT/prm loads and scores steps, a
resumed run continues where the checkpoint left off), best-of-N selectors and the dense process reward of GRPO
(DeepSeekMath's process supervision) against hand-computed values, and user mistakes are one-line errors. The
best-of-8 comparison itself is benchmarks/prm_best_of_n.py (figures in docs/post-training.md)."""

import json
import random
import re

import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.train.post.prm import (
    aggregate,
    best_of_n,
    majority_vote,
    paired_bootstrap,
    process_advantages,
    weighted_vote,
)
from lmforge.train.post.prm_data import (
    StepSampler,
    final_answer,
    heldout_problems,
    sample_solution,
    step_solutions,
    validate_step_record,
)
from tests.cli_util import assert_user_error
from tests.inprocess_cli import run_main
from tests.pretrained_tiny import pretrained_tiny_dir

TINY = ("--threads", "1", "--no-progress", "--batch-size", "4", "--train-solutions", "24", "--heldout-solutions", "8",
        "--max-steps", "4", "--lr", "3e-3", "--checkpoint-every", "2", "--eval-every", "4", "--warmup-steps", "1")


def test_step_task_labels_follow_the_arithmetic():
    rows = step_solutions(400, "train")
    for r in rows:
        previous = int(re.search(r"Start at (\d+)", r["prompt"]).group(1))
        for step, label in zip(r["steps"], r["labels"], strict=True):
            a, b, c = map(int, re.fullmatch(r"(\d+)\+(\d+)=(\d+)", step).groups())
            assert label == int(a == previous and a + b == c)  # continues from the last result and adds right
            previous = c
        assert final_answer(r["steps"]) == r["final"]
    lucky = [r for r in rows if r["correct"] and 0 in r["labels"]]  # right by accident: an ORM's labels miss it
    clean = [r for r in rows if all(r["labels"])]
    assert lucky and clean and all(r["correct"] for r in clean)
    train_prompts = {r["prompt"] for r in rows}
    assert not train_prompts & {p["prompt"] for p in heldout_problems(100)}
    perfect = sample_solution(heldout_problems(1)[0], random.Random(0), StepSampler(0.0, 0.0, 0.0))
    assert all(perfect["labels"]) and perfect["correct"]


def test_step_record_validation():
    ok = validate_step_record({"prompt": "p", "steps": ["a", "b"], "labels": [1, 0]}, "x")
    assert ok["labels"] == [1, 0]
    for bad in ({"steps": ["a"], "labels": [1]}, {"prompt": "p", "steps": [], "labels": []},
                {"prompt": "p", "steps": ["a", "b"], "labels": [1]}, {"prompt": "p", "steps": ["a"], "labels": [2]}):
        with pytest.raises(LmforgeError):
            validate_step_record(bad, "f.jsonl:1")


def test_selectors():
    assert aggregate([0.9, 0.2, 0.8], "min") == 0.2
    assert aggregate([0.5, 0.5], "prod") == pytest.approx(0.25)
    assert best_of_n([0.1, 0.7, 0.7]) == 1
    assert majority_vote([3, 5, 5, 3, 7]) == 3  # a tie goes to the answer seen first
    with pytest.raises(LmforgeError):
        aggregate([0.5], "mean")


def test_weighted_vote_lets_a_trusted_minority_beat_a_doubted_majority():
    answers, weights = [7, 7, 7, 5, 5], [0.1, 0.2, 0.1, 0.9, 0.8]
    assert majority_vote(answers) == 7 and weighted_vote(answers, weights) == 5  # 0.4 for 7 against 1.7 for 5
    assert weighted_vote([3, 5, 5, 3], [1.0, 0.5, 0.5, 0.0]) == 3  # a tie (1.0 each) goes to the answer seen first
    assert weighted_vote([3, 5], [0.0, 0.0]) == 3
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(LmforgeError, match="finite and >= 0"):
            weighted_vote([1, 2], [0.5, bad])
    with pytest.raises(LmforgeError, match="as many weights"):
        weighted_vote([1, 2], [0.5])


def test_paired_bootstrap_interval_matches_the_normal_approximation():
    rng = random.Random(3)
    a = [float(rng.random() < 0.8) for _ in range(1000)]
    b = [x if rng.random() < 0.85 else 1 - x for x in a]  # mostly the same items right: a paired comparison
    out = paired_bootstrap(a, b, iters=3000, seed=3)
    diffs = torch.tensor(a) - torch.tensor(b)
    half = 1.96 * float(diffs.std()) / len(a) ** 0.5  # the CLT interval of a mean of 1000 differences
    assert out["diff"] == pytest.approx(float(diffs.mean()), abs=1e-9)
    assert out["low"] == pytest.approx(out["diff"] - half, abs=0.15 * half)
    assert out["high"] == pytest.approx(out["diff"] + half, abs=0.15 * half)
    assert paired_bootstrap(a, a) == {"diff": 0.0, "low": 0.0, "high": 0.0}  # the same picks: no difference at all
    with pytest.raises(LmforgeError, match="equally long"):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_process_advantages_sum_the_normalised_rewards_of_the_steps_ahead():
    mask = torch.ones(2, 6)
    rewards, ends = [[1.0, 0.0], [1.0, 1.0]], [[1, 4], [2, 5]]
    adv = process_advantages(rewards, ends, mask, group_size=2)
    pooled = torch.tensor([1.0, 0.0, 1.0, 1.0])
    z = (pooled - pooled.mean()) / (pooled.std() + 1e-4)
    want = torch.tensor([[z[0] + z[1]] * 2 + [z[1]] * 3 + [0.0], [z[2] + z[3]] * 3 + [z[3]] * 3])
    assert torch.allclose(adv, want, atol=1e-5)
    assert adv[0, 2] < adv[1, 2]  # the tokens of the wrong step get less than the same place in a right solution


class ArithmeticPRM:
    """A scripted PRM: P(step right) = 1 when "a+b=c" adds up, else 0."""

    def step_scores_batch(self, items):
        out = []
        for _, steps in items:
            out.append([float(eval(s.split("=")[0]) == int(s.split("=")[1])) for s in steps])  # noqa: S307
        return out


def test_process_grpo_puts_the_step_reward_into_the_token_advantages():
    from lmforge.formats.loader import load
    from lmforge.train.post.prm_grpo import ProcessGRPOTrainer, completion_steps
    from lmforge.train.post.rl_config import GRPOConfig

    lm = load(str(pretrained_tiny_dir()))
    tok = lm.tokenizer
    answers = ["18+7=25\n25+3=28", "18+7=15\n15+3=18"]  # right, then a forgotten carry in the first step

    def generate_fn(prompts, params):
        return [tok.encode_plain(answers[i % 2]) for i in range(len(prompts))]

    steps, ends = completion_steps(tok, tok.encode_plain(answers[1]))
    assert steps == ["18+7=15", "15+3=18"] and tok.decode(tok.encode_plain(answers[1])[ends[0]]).endswith("\n")
    cfg = GRPOConfig(group_size=2, prompts_per_step=1, max_new_tokens=16, beta=0.0, iterations=1, minibatch_size=2)
    trainer = ProcessGRPOTrainer(cfg, lm.model, None, lambda records, texts: torch.zeros(len(texts)), generate_fn,
                                 tok, 0, lambda step, round_: [{"prompt": "Start at 18, add 7, then add 3."}],
                                 prm=ArithmeticPRM())
    batch, adv = trainer.sample_groups([{"prompt": "Start at 18, add 7, then add 3."}], seed=3)
    assert adv.shape == batch.mask.shape
    right, wrong = adv[0][batch.mask[0] > 0], adv[1][batch.mask[1] > 0]
    first = len(tok.encode_plain("18+7=15\n"))  # the first step's tokens, then the second's
    assert (right[:first] > 0).all() and (wrong[:first] < 0).all()  # the wrong step's tokens are pushed down
    assert torch.allclose(right[first:], wrong[first:]) and (wrong[first:] > 0).all()  # a right step after it is not
    before = [p.detach().clone() for p in lm.model.parameters()]
    stats = trainer.step(lambda round_: [{"prompt": "Start at 18, add 7, then add 3."}], 0)
    assert torch.isfinite(torch.tensor(stats["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, lm.model.parameters(), strict=True))


def test_prm_train_cli_and_resume(tmp_path, capsys):
    model = str(pretrained_tiny_dir())
    out = tmp_path / "prm"
    result = run_main(capsys, "prm", "train", "--model", model, "--out", out, *TINY)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["train_solutions"] == 24 and 0 <= summary["step_accuracy_after"] <= 1
    assert "held-out step accuracy" in result.stdout
    from lmforge.train.post.prm_train import load_prm

    prm = load_prm(out / "prm")
    scores = prm.step_scores("Start at 18, add 7.", ["18+7=25", "25+1=26"])
    assert len(scores) == 2 and all(0 < s < 1 for s in scores)
    # resume: the run continued from step 2 logs the same step 3, 4 losses as the uninterrupted one
    import shutil

    again = tmp_path / "again"
    shutil.copytree(out, again)
    shutil.rmtree(again / "checkpoints" / "step-00000004")  # as if killed between steps 2 and 4
    result = run_main(capsys, "prm", "train", "--model", model, "--out", again, "--resume", *TINY)
    assert result.returncode == 0, result.stderr
    losses = {json.loads(line)["step"]: json.loads(line)["loss"] for line in (out / "metrics.jsonl").open()
              if '"train"' in line}
    resumed = [json.loads(line) for line in (again / "metrics.jsonl").open() if '"train"' in line]
    assert [r["step"] for r in resumed][-2:] == [3, 4]
    assert [r["loss"] for r in resumed][-2:] == [losses[3], losses[4]]


def test_prm_user_errors(tmp_path, capsys):
    model = str(pretrained_tiny_dir())
    assert_user_error(run_main(capsys, "prm", "train", "--model", model, "--out", tmp_path / "a", "--data",
                               tmp_path / "missing.jsonl"), "missing.jsonl", "does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "steps": ["1+1=2", "2+2=5"], "labels": [1]}) + "\n")
    assert_user_error(run_main(capsys, "prm", "train", "--model", model, "--out", tmp_path / "b", "--data", bad),
                      "bad.jsonl:1", "labels")
    assert_user_error(run_main(capsys, "prm", "generate", "--out", tmp_path / "g.jsonl", "--split", "test"),
                      "--split", "heldout")
    result = run_main(capsys, "prm", "generate", "--out", tmp_path / "g.jsonl", "--n", "5")
    rows = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert result.returncode == 0 and len(rows) == 5 and set(rows[0]) == {"prompt", "steps", "labels", "correct"}
    no_outcome = tmp_path / "steps_only.jsonl"
    no_outcome.write_text(json.dumps({"prompt": "p", "steps": ["1+1=2"], "labels": [1]}) + "\n")
    assert_user_error(run_main(capsys, "prm", "train", "--model", model, "--out", tmp_path / "c", "--data", no_outcome,
                               "--heldout", no_outcome, "--outcome-labels"), "--outcome-labels", "correct")
    half = tmp_path / "half.jsonl"
    half.write_text(json.dumps({"prompt": "p", "steps": ["1+1=2"], "labels": [1], "correct": 0.5}) + "\n")
    assert_user_error(run_main(capsys, "prm", "train", "--model", model, "--out", tmp_path / "d", "--data", half,
                               "--outcome-labels"), "half.jsonl:1", "correct")


def test_outcome_labels_train_the_prm_head_on_one_final_answer_label(tmp_path, capsys):
    from lmforge.formats.loader import load
    from lmforge.train.post.prm_config import PRMConfig
    from lmforge.train.post.prm_train import encode_records, load_prm

    tok = load(str(pretrained_tiny_dir())).tokenizer
    records = step_solutions(40, "train")
    lucky = next(r for r in records if r["correct"] and 0 in r["labels"])  # wrong process, right answer
    cfg = PRMConfig.from_dict({"model": "m", "data": {"outcome_labels": True}})
    process = encode_records(tok, [lucky], PRMConfig.from_dict({"model": "m"}))[0]
    outcome = encode_records(tok, [lucky], cfg)[0]
    assert process.labels == lucky["labels"] and 0 in process.labels
    assert outcome.ids == process.ids and outcome.ends == process.ends[-1:] and outcome.labels == [1]
    assert tok.decode([outcome.ids[outcome.ends[0]]]).endswith("\n") and outcome.ends[0] == len(outcome.ids) - 1
    out = tmp_path / "orm"
    result = run_main(capsys, "prm", "train", "--model", str(pretrained_tiny_dir()), "--out", out, "--outcome-labels",
                      *TINY)
    assert result.returncode == 0, result.stderr
    assert "Outcome reward model" in result.stdout and "24 train solutions (24 final answers" in result.stdout
    assert json.loads((out / "prm" / "reward_model.json").read_text())["outcome_labels"] is True
    scores = load_prm(out / "prm", outcome_ok=True).step_scores("Start at 18, add 7.", ["18+7=25", "25+1=26"])
    assert len(scores) == 2 and all(0 < s < 1 for s in scores)  # the last one is the outcome score
    with pytest.raises(LmforgeError, match="--outcome-labels"):  # not a dense per-step reward for GRPO
        load_prm(out / "prm")


def test_step_surprisal_head_adds_the_gated_log_probabilities_of_each_steps_tokens(tmp_path, capsys):
    from lmforge.formats.loader import load
    from lmforge.train.post.prm import encode_steps, step_logits
    from lmforge.train.post.prm_surprisal import SurprisalHead
    from lmforge.train.post.prm_train import ProcessRewardModel, load_prm
    from lmforge.train.post.value_head import ScalarHead

    lm = load(str(pretrained_tiny_dir()))
    prompt, steps = "Start at 18, add 7, then add 3.", ["18+7=25", "25+3=27"]
    row = encode_steps(lm.tokenizer, prompt, steps, [1, 0])
    assert lm.tokenizer.decode(row.ids[row.start:row.ends[0] + 1]) == "18+7=25\n"
    torch.manual_seed(0)
    plain = ScalarHead(lm.model)
    torch.manual_seed(0)
    head = SurprisalHead(lm.model)
    with torch.no_grad():
        assert torch.allclose(step_logits(head, [row], 0)[0], step_logits(plain, [row], 0)[0])  # w = c = 0: unchanged
        head.mix.copy_(torch.tensor([0.5, 0.25]))
        ids = torch.tensor([row.ids])
        hidden = lm.model.hidden_states(ids, torch.ones_like(ids))
        logp = torch.log_softmax(lm.model.lm_head(hidden)[0].float(), -1)
        gate = torch.sigmoid(head.gate(hidden)[0, :, 0])
        value = head.score(hidden)[0, :, 0]
        bounds = [(row.start, row.ends[0]), (row.ends[0] + 1, row.ends[1])]
        want = [value[b] + 0.5 * sum(gate[t] * logp[t - 1, row.ids[t]] for t in range(a, b + 1)) + 0.25
                for a, b in bounds]
        assert torch.allclose(step_logits(head, [row], 0)[0], torch.stack(want), atol=1e-5)
        # an outcome model (--outcome-labels) trains on one reading at the last newline over the whole solution, and
        # is scored the same way (the last step's reading alone would miss a wrong first step)
        whole = value[row.ends[1]] + 0.5 * sum(gate[t] * logp[t - 1, row.ids[t]]
                                               for t in range(row.start, row.ends[1] + 1)) + 0.25
        scorer = ProcessRewardModel(head, lm.tokenizer, 256)
        assert abs(scorer.outcome_scores_batch([(prompt, steps)])[0] - torch.sigmoid(whole).item()) < 1e-5
        assert abs(scorer.step_scores(prompt, steps)[1] - torch.sigmoid(want[1]).item()) < 1e-5
    out = tmp_path / "sur"
    result = run_main(capsys, "prm", "train", "--model", str(pretrained_tiny_dir()), "--out", out, "--step-surprisal",
                      *TINY)
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "prm" / "reward_model.json").read_text())
    assert saved["step_surprisal"] is True and (out / "prm" / "surprisal_head.safetensors").is_file()
    prm = load_prm(out / "prm")
    assert isinstance(prm.head, SurprisalHead) and prm.head.mix.abs().sum() > 0  # trained, and read back
    assert len(prm.step_scores(prompt, steps)) == 2
