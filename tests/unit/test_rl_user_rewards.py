"""RL on the user's own data (issue 30, item 1): `lmforge grpo --prompts FILE.jsonl --reward file.py:function` —
reward functions as plain callables over (prompts, completions, **columns) like TRL's, built-in verifiers, weights,
and a function that raises on some samples costs those samples their reward, is logged per sample, and the run
finishes. The user's task here (written by the test): answer the corpus's arithmetic questions with a bare number
close to the sum; GRPO raises its held-out reward, with the KL to the reference reported. Commands run through the
`lmforge` entry point in this process (tests/inprocess_cli.py)."""

import json
import math

import pytest

from lmforge.common.errors import LmforgeError
from lmforge.train.post.rewards import CombinedReward, RewardErrors, parse_reward
from tests.cli_util import assert_user_error
from tests.inprocess_cli import run_main
from tests.pretrained_tiny import pretrained_tiny_dir

USER_REWARDS = '''
import re


def bare_number(prompts, completions, answer, **columns):
    """0.5 for a bare number (nothing after it), plus up to 0.5 as it nears the answer."""
    out = []
    for completion, want in zip(completions, answer):
        text = completion.strip()
        if re.fullmatch(r"-?\\d+", text) is None:
            out.append(0.0)
        else:
            out.append(0.5 + 0.5 * max(0.0, 1.0 - abs(int(text) - want) / 10))
    return out


def flaky(prompts, completions, **columns):
    """Raises on any completion with a 1 in it (a buggy user function)."""
    if any("1" in c for c in completions):
        raise ValueError("cannot score a 1")
    return [1.0] * len(completions)
'''


def _records(texts, **columns):
    return [{"prompt": f"p{i}", **{k: v[i] for k, v in columns.items()}} for i in range(len(texts))]


def test_builtin_verifiers_and_weights():
    texts = ['{"answer": 12}<|im_end|>', "12", "twelve", " 12.0 ", 'x' * 100]
    records = _records(texts, answer=[12] * 5)
    cases = {"exact": [0, 1, 0, 0, 0], "numeric": [1, 1, 0, 1, 0], "json": [1, 1, 0, 1, 0],
             "json=answer": [1, 0, 0, 0, 0], "regex=^\\d+$": [0, 1, 0, 0, 0], "length=50": [0, 0, 0, 0, -1.0]}
    for spec, want in cases.items():
        got = CombinedReward([parse_reward(spec)], RewardErrors())(records, texts).tolist()
        assert got == pytest.approx(want), spec
    combined = CombinedReward([parse_reward("numeric@2"), parse_reward("json=answer@-0.5")], RewardErrors())
    assert combined(records, texts).tolist() == pytest.approx([1.5, 2, 0, 2, 0])
    assert parse_reward("regex=a@b").name == "regex=a@b"  # an @ that is no weight belongs to the pattern


def test_a_raising_function_costs_only_its_samples(tmp_path):
    (tmp_path / "user_rewards.py").write_text(USER_REWARDS)
    lines = []
    errors = RewardErrors(tmp_path / "reward_errors.jsonl", lines.append)
    reward = CombinedReward([parse_reward(f"{tmp_path / 'user_rewards.py'}:flaky")], errors)
    texts = ["7", "10", "3", "41", "5"]
    assert reward(_records(texts), texts).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    logged = [json.loads(line) for line in (tmp_path / "reward_errors.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in logged] == ["10", "41"] and errors.count == 2
    assert all(r["error"] == "ValueError: cannot score a 1" for r in logged)
    assert len(lines) == 2 and "failed on a sample" in lines[0]

    def nan_reward(prompts, completions, **_):
        return [math.nan if c == "3" else 0.5 for c in completions]
    from lmforge.train.post.rewards import Reward

    assert CombinedReward([Reward("nan", nan_reward)], errors)(_records(texts), texts).tolist() == [0.5, 0.5, 0, 0.5,
                                                                                                    0.5]
    assert errors.count == 3


def test_reward_error_file_stays_bounded(tmp_path, monkeypatch):
    from lmforge.train.post import rewards

    monkeypatch.setattr(rewards, "FILED_ERRORS", 3)
    lines = []
    errors = RewardErrors(tmp_path / "reward_errors.jsonl", lines.append)
    for i in range(10):
        errors.add("r", "p", str(i), "ValueError")
    filed = [json.loads(line)["completion"] for line in (tmp_path / "reward_errors.jsonl").read_text().splitlines()]
    assert filed == ["0", "1", "2"] and errors.count == 10
    assert any("further ones are only counted" in line for line in lines)


@pytest.mark.parametrize("spec,message", [("nosuch", "neither a built-in"), ("no_such_module_xyz:f", "cannot import"),
                                          ("length=0", "positive integer"), ("regex=(", "not a valid regular")])
def test_bad_reward_specs_are_one_line_errors(spec, message):
    with pytest.raises(LmforgeError, match=message):
        parse_reward(spec)


def _prompt_file(path, n=100):
    lines = [{"prompt": f"Q: What is {a} + {b}?\nA:", "answer": a + b} for a in range(10) for b in range(10)][:n]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_grpo_on_user_prompts_and_reward_file_raises_heldout_reward(tmp_path, capsys):
    (tmp_path / "user_rewards.py").write_text(USER_REWARDS)
    prompts = _prompt_file(tmp_path / "prompts.jsonl")
    out = tmp_path / "run"
    result = run_main(capsys, "grpo", "--model", pretrained_tiny_dir(), "--out", out, "--prompts", prompts,
                      "--reward", f"{tmp_path / 'user_rewards.py'}:bare_number",
                      "--reward", f"{tmp_path / 'user_rewards.py'}:flaky@0.05", "--steps", "20", "--eval-prompts",
                      "20", "--eval-every", "0", "--threads", "1", "--no-export-hf", "--no-progress")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    print(f"user task: held-out reward {summary['before_reward_greedy']:.3f} -> {summary['after_reward_greedy']:.3f} "
          f"(greedy; bare_number {summary['before_bare_number_greedy']:.3f} -> "
          f"{summary['after_bare_number_greedy']:.3f}), KL {summary['after_kl']:.3f} nats/sequence, "
          f"{summary['reward_errors']} reward errors, {summary['elapsed_s']:.0f} s")
    assert summary["heldout_problems"] == 20 and summary["task"]["train_prompts"] == 80
    assert summary["after_reward_greedy"] >= summary["before_reward_greedy"] + 0.15
    assert summary["after_bare_number_greedy"] > summary["before_bare_number_greedy"]
    assert 0 < summary["after_kl"] < 5
    assert summary["reward_errors"] > 0  # the flaky function raised, and the run went on
    errors = [json.loads(line) for line in (out / "reward_errors.jsonl").read_text().splitlines()]
    assert len(errors) == summary["reward_errors"] and all("1" in e["completion"] for e in errors)
    assert "warning: reward" in result.stdout and "KL to the reference" in result.stdout
    report = (out / "report.md").read_text()
    assert "bare_number (greedy)" in report and "KL(policy" in report


def test_rl_user_data_mistakes_are_one_line_errors(tmp_path, capsys):
    prompts = _prompt_file(tmp_path / "prompts.jsonl", n=10)
    model = str(pretrained_tiny_dir())
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "noanswer.jsonl").write_text('{"prompt": "a"}\n' * 6)
    cases = [
        (["--reward", "exact"], "--reward scores your --prompts"),
        (["--prompts", str(prompts)], "--prompts needs a reward"),
        (["--prompts", str(tmp_path / "missing.jsonl"), "--reward", "json"], "does not exist"),
        (["--prompts", str(tmp_path / "bad.jsonl"), "--reward", "json"], "bad.jsonl:2 needs a \"prompt\""),
        (["--prompts", str(prompts), "--reward", "nope"], "neither a built-in"),
        (["--prompts", str(prompts), "--reward", f"{tmp_path / 'broken.py'}:f"], "RuntimeError: boom"),
        (["--prompts", str(prompts), "--reward", f"{tmp_path / 'missing.py'}:f"], "no such file"),
        (["--prompts", str(tmp_path / "noanswer.jsonl"), "--reward", "numeric"], "reads the column(s) answer"),
    ]
    for args, message in cases:
        result = run_main(capsys, "grpo", "--model", model, "--out", tmp_path / "out", *args)
        assert_user_error(result, message)
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_rl_help_names_the_new_flags(capsys):
    result = run_main(capsys, "grpo", "--help")
    assert result.returncode == 0
    for flag in ("--prompts", "--heldout-prompts", "--reward", "module:function", "@WEIGHT"):
        assert flag in result.stdout


@pytest.mark.slow  # three CLI processes: ~40 s on a quiet machine
def test_grpo_on_user_prompts_sigkill_then_resume_is_bitwise_exact(tmp_path):
    from tests.kill_resume import kill_resume_and_compare, lmforge

    (tmp_path / "user_rewards.py").write_text(USER_REWARDS)
    prompts = _prompt_file(tmp_path / "prompts.jsonl")
    ref, steps = tmp_path / "ref", 8
    kill_resume_and_compare(lmforge("grpo", "--model", pretrained_tiny_dir(), "--out", ref, "--prompts", prompts,
                                    "--reward", f"{tmp_path / 'user_rewards.py'}:bare_number", "--reward",
                                    "numeric@0.5", "--steps", steps, "--prompts-per-step", 2, "--group-size", 4,
                                    "--minibatch-size", 4, "--max-new-tokens", 4, "--eval-prompts", 4,
                                    "--eval-every", 3, "--checkpoint-every", 2, "--grad-accum", 2, "--threads", 1,
                                    "--no-export-hf", "--no-progress"),
                            ref, tmp_path / "killed", steps, (3, steps - 3))


def test_prompt_file_split_columns_and_chat_prompts(tmp_path):
    from lmforge.train.post.prompt_set import PromptSet
    from tests.tiny_lm import tiny_tokenizer

    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"say {i}"}], "answer": i}) + "\n"
                            for i in range(10)))
    prompts = PromptSet.from_files(str(path), seed=3)
    assert [r["answer"] for r in prompts.heldout] == [4, 9] and len(prompts.train) == 8
    prompts.check_columns({"numeric": ("answer",)})
    with pytest.raises(LmforgeError, match="reads the column"):
        prompts.check_columns({"regex": ("pattern",)})
    prompts.render(tiny_tokenizer())  # its ChatML template
    assert prompts.train[0]["prompt"] == "<|im_start|>user\nsay 0<|im_end|>\n<|im_start|>assistant\n"
    assert prompts.train[0]["messages"] == [{"role": "user", "content": "say 0"}]
    draws = prompts.records(16, "train", start=0)  # two passes, each a permutation of the 8 training prompts
    assert sorted(r["answer"] for r in draws[:8]) == sorted(r["answer"] for r in prompts.train)
    assert draws == prompts.records(16, "train", start=0) and draws[8:] == prompts.records(8, "train", start=8)


def test_reward_model_joins_the_user_terms_in_ppo(tmp_path, capsys):
    """--reward-model DIR is one more term of the sum: a constant 7 reward model plus a 0/1 json term weighted 2
    makes every rollout reward 7 or 9, in PPO (the user's prompts work in every RL command)."""
    import torch

    from lmforge.formats.loader import load
    from lmforge.train.metrics import read_metrics
    from lmforge.train.post.reward_model import save_reward_model
    from lmforge.train.post.value_head import ScalarHead

    lm = load(str(pretrained_tiny_dir()))
    head = ScalarHead(lm.model)
    with torch.no_grad():
        head.score.weight.zero_()
        head.score.bias.fill_(7.0)
    save_reward_model(head, lm.tokenizer, tmp_path / "rm")
    prompts = _prompt_file(tmp_path / "prompts.jsonl", n=20)
    result = run_main(capsys, "ppo", "--model", pretrained_tiny_dir(), "--out", tmp_path / "run", "--prompts", prompts,
                      "--reward-model", tmp_path / "rm", "--reward", "json@2", "--steps", "2", "--batch-size", "4",
                      "--minibatch-size", "4", "--max-new-tokens", "3", "--eval-prompts", "4", "--eval-every", "0",
                      "--threads", "1", "--no-export-hf", "--no-progress")
    assert result.returncode == 0, result.stderr
    rewards = [r["reward"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("kind") == "train"]
    assert len(rewards) == 2 and all(7.0 - 1e-4 <= r <= 9.0 + 1e-4 for r in rewards)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert abs(summary["after_reward_model_greedy"] - 7.0) < 1e-4
    assert summary["task"]["rewards"] == ["json@2", "reward_model@1"]
