"""`lmforge grpo --process-reward-model DIR` (issue 30, item 5): a process reward model's per-step scores as a dense
reward in GRPO (DeepSeekMath's process supervision). The advantage of a completion's tokens changes exactly at each
step's end by that step's group-normalised reward (closed form on a two-completion group); through the command, a
task whose outcome reward is the same for every sample (so plain GRPO has nothing to learn: zero loss and gradient)
trains once the PRM scores the steps; bad input is a one-line error."""

import json

import pytest
import torch

from tests.cli_util import assert_user_error
from tests.inprocess_cli import run_main
from tests.pretrained_tiny import pretrained_tiny_dir

PROMPT = "Start at 18, add 7, then add 3. Show each step."


class ScriptedPRM:
    """P(step right) from a table: step text -> score."""

    def __init__(self, table):
        self.table = table

    def step_scores_batch(self, items):
        return [[self.table[s] for s in steps] for _, steps in items]


def test_step_reward_enters_the_advantage_where_the_step_ends():
    from lmforge.formats.loader import load
    from lmforge.train.post.prm_grpo import ProcessGRPOTrainer, completion_steps
    from lmforge.train.post.rl_config import GRPOConfig

    lm = load(str(pretrained_tiny_dir()))
    tok = lm.tokenizer
    answers = ["18+7=25\n25+3=28", "18+7=15\n15+3=18"]  # right; a dropped carry in step 1
    prm = ScriptedPRM({"18+7=25": 0.9, "25+3=28": 0.8, "18+7=15": 0.2, "15+3=18": 0.7})
    outcome = {answers[0]: 1.0, answers[1]: 0.0}
    cfg = GRPOConfig(group_size=2, prompts_per_step=1, max_new_tokens=16, beta=0.0, minibatch_size=2,
                     process_reward_model="scripted")
    def reward_fn(records, texts):
        return torch.tensor([outcome[t] for t in texts])

    def generate_fn(prompts, params):
        return [tok.encode_plain(answers[i % 2]) for i in range(len(prompts))]

    trainer = ProcessGRPOTrainer(cfg, lm.model, None, reward_fn, generate_fn, tok, 0, prm=prm)
    batch, adv = trainer.sample_groups([{"prompt": PROMPT}], seed=0)
    # closed form: step rewards (the outcome added to the last step), z-scored over the group's four steps
    rewards = torch.tensor([0.9, 0.8 + 1.0, 0.2, 0.7 + 0.0])
    z = ((rewards - rewards.mean()) / (rewards.std() + 1e-4)).view(2, 2)
    for i, text in enumerate(answers):
        ids = tok.encode_plain(text)
        _, (end1, end2) = completion_steps(tok, ids)
        got = adv[i][batch.mask[i] > 0]  # completion token j's advantage
        assert len(got) == len(ids) and end2 == len(ids) - 1
        want = torch.cat([torch.full((end1 + 1,), float(z[i, 0] + z[i, 1])),  # the tokens of step 1 and its end
                          torch.full((end2 - end1,), float(z[i, 1]))])  # step 2's
        assert torch.allclose(got, want, atol=1e-5)
        assert float(got[end1] - got[end1 + 1]) == pytest.approx(float(z[i, 0]), abs=1e-5)  # the jump at step 1's end
    assert adv[1][batch.mask[1] > 0][0] < 0 < adv[0][batch.mask[0] > 0][0]  # the dropped carry is pushed down
    assert trainer.process_stats["prm_step_score"] == pytest.approx(0.65)


def _process_rm(directory, process: bool):
    from lmforge.formats.loader import load
    from lmforge.train.post.reward_model import save_reward_model
    from lmforge.train.post.value_head import ScalarHead

    lm = load(str(pretrained_tiny_dir()))
    head = ScalarHead(lm.model)
    torch.manual_seed(0)
    torch.nn.init.normal_(head.score.weight, std=1.0)  # step scores that differ from step to step
    save_reward_model(head, lm.tokenizer, directory, {"max_len": 128, "process": True} if process else None)
    return directory


RUN = ("--steps", "1", "--prompts-per-step", "1", "--group-size", "4", "--minibatch-size", "4", "--max-new-tokens",
       "8", "--beta", "0", "--eval-prompts", "1", "--eval-every", "0", "--threads", "1", "--no-export-hf",
       "--no-progress")


def _train_record(out):
    return next(json.loads(line) for line in (out / "metrics.jsonl").open() if '"kind": "train"' in line)


def test_grpo_process_reward_model_cli_trains_where_the_outcome_cannot(tmp_path, capsys):
    prm = _process_rm(tmp_path / "prm", process=True)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Start at {10 + i}, add 7, then add 3. Show each step."}) + "\n"
                               for i in range(6)))
    # the outcome (0 up to 1000 characters) is 0 for every sample: plain GRPO's advantages, loss and gradient are 0
    result = run_main(capsys, "grpo", "--model", pretrained_tiny_dir(), "--prompts", prompts, "--reward",
                      "length=1000", *RUN, "--out", tmp_path / "dense", "--process-reward-model", prm)
    assert result.returncode == 0, result.stderr
    record = _train_record(tmp_path / "dense")
    assert record["reward"] == 0  # every rollout's outcome reward
    assert record["grad_norm"] > 0 and 0 < record["prm_step_score"] < 1 and record["prm_steps"] >= 1  # the PRM's
    config = json.loads((tmp_path / "dense" / "summary.json").read_text())["config"]
    assert config["process_reward_model"] == str(prm)


def test_grpo_process_reward_model_help_and_errors(tmp_path, capsys):
    result = run_main(capsys, "grpo", "--help")
    assert result.returncode == 0 and "--process-reward-model" in result.stdout
    outcome = _process_rm(tmp_path / "orm", process=False)
    model = str(pretrained_tiny_dir())
    for args, message in [(["--process-reward-model", outcome], "outcome reward model"),
                          (["--process-reward-model", tmp_path / "nothing"], "not a process reward model"),
                          (["--process-reward-model", outcome, "--advantage", "rloo"], "--advantage grpo")]:
        assert_user_error(run_main(capsys, "grpo", "--model", model, "--out", tmp_path / "out", *args), message)
    assert not (tmp_path / "out").exists()  # refused before anything ran
