"""Preference data, prompt+completion log-probs, the reward model's save/load and the `lmforge rm` / `lmforge dpo`
commands on a tiny random model (seconds): properties and round trips, not figures (those are in the slow tests)."""

import json
import re

import pytest
import torch

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.tasks.preferences import (
    KINDS,
    is_heldout,
    preference_pair,
    preference_pairs,
    read_preference_jsonl,
)
from lmforge.train.post.dpo import DPOConfig
from lmforge.train.post.logprobs import token_logprobs
from lmforge.train.post.pairs import collate, encode_completion, encode_pairs, sequence_logprobs
from lmforge.train.post.reward_model import load_reward_model, pair_scores, save_reward_model
from lmforge.train.post.reward_train import RewardConfig
from lmforge.train.post.value_head import ScalarHead
from tests.cli_util import run_cli
from tests.tiny_lm import tiny_lm


def test_pairs_are_deterministic_and_splits_disjoint():
    assert preference_pair(3, 17) == preference_pair(3, 17)
    assert preference_pair(3, 17) != preference_pair(4, 17)
    train, held = preference_pairs(300, "train"), preference_pairs(100, "heldout")
    assert not any(is_heldout(p) for p in train) and all(is_heldout(p) for p in held)
    key = lambda p: (p.prompt_text(), p.chosen)  # noqa: E731
    assert not {key(p) for p in train} & {key(p) for p in held}
    assert {p.kind for p in held} == set(KINDS)


def test_chosen_answers_are_right_and_rejected_ones_wrong():
    for p in preference_pairs(200, "train"):
        assert p.chosen != p.rejected
        if p.kind == "arithmetic":
            a, b = map(int, re.findall(r"\d+", p.prompt[0]["content"]))
            assert p.chosen == f"{a} + {b} = {a + b}." and p.rejected != p.chosen
        elif p.kind == "uppercase":
            assert p.chosen.isupper() and not p.rejected.isupper()
        elif p.kind == "one_word":
            assert len(p.chosen.split()) == 1 < len(p.rejected.split())
        else:
            assert sorted(p.chosen.replace(".", "").split()) == sorted(p.rejected.replace(".", "").split())


def test_jsonl_reader_accepts_strings_and_messages(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "hi?", "chosen": "hello", "rejected": "go away"},
            {"prompt": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}],
             "chosen": "hello", "rejected": "no"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pairs = read_preference_jsonl(path)
    assert pairs[0].prompt == ({"role": "user", "content": "hi?"},) and pairs[1].prompt[0]["role"] == "system"


@pytest.mark.parametrize("line, needle", [
    ("{not json", "not valid JSON"),
    ('{"prompt": "a", "chosen": "b"}', "missing rejected"),
    ('{"prompt": "a", "chosen": "", "rejected": "c"}', "'chosen' must be a non-empty string"),
    ('{"prompt": [{"role": "assistant", "content": "x"}], "chosen": "b", "rejected": "c"}', "must end before"),
    ('{"prompt": 3, "chosen": "b", "rejected": "c"}', "'prompt' must be"),
])
def test_jsonl_reader_errors_name_the_line(tmp_path, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "chosen": "b", "rejected": "c"}\n' + line + "\n")
    with pytest.raises(LmforgeError, match=re.escape(needle)) as err:
        read_preference_jsonl(path)
    assert "bad.jsonl:2" in str(err.value)


def test_completion_is_the_assistant_turn_with_its_end_token():
    tok = tiny_lm().tokenizer
    prompt = [{"role": "user", "content": "hello there"}]
    enc = encode_completion(tok, prompt, "the cat sat")
    assert tok.decode(list(enc.ids[:enc.start])) == tok.apply_chat_template(prompt, add_generation_prompt=True)
    assert tok.decode(list(enc.ids[enc.start:])) == "the cat sat<|im_end|>"


def test_sequence_logprobs_match_unpadded_rows():
    lm = tiny_lm()
    tok = lm.tokenizer
    rows = [encode_completion(tok, [{"role": "user", "content": q}], a)
            for q, a in [("hi", "hello world, hello there!"), ("the dog sat on the log?", "yes")]]
    total, count = sequence_logprobs(lm.model, collate(rows))
    for i, r in enumerate(rows):
        logp = token_logprobs(lm.model, torch.tensor([r.ids]))[0, r.start - 1:]
        assert float(total[i].detach()) == pytest.approx(float(logp.detach().sum()), abs=1e-4)
        assert int(count[i]) == len(r.ids) - r.start


def test_reward_model_round_trip(tmp_path):
    lm = tiny_lm()
    head = ScalarHead(lm.model).eval()
    torch.nn.init.normal_(head.score.weight)
    save_reward_model(head, lm.tokenizer, tmp_path / "rm", {"max_len": 128})
    rm = load_reward_model(tmp_path / "rm")
    prompts = ["hello there", [{"role": "user", "content": "the cat?"}]]
    completions = ["the cat sat on the mat.", "hello"]
    rows = [encode_completion(lm.tokenizer, [{"role": "user", "content": "hello there"}], completions[0], 128),
            encode_completion(lm.tokenizer, prompts[1], completions[1], 128)]
    batch = collate(rows)
    with torch.no_grad():
        expected = head.last_token_scores(batch.ids, batch.attention_mask)
    assert torch.allclose(rm.score(prompts, completions), expected, atol=1e-5)
    with pytest.raises(LmforgeError, match="score_head.safetensors"):
        load_reward_model(tmp_path)


def test_pair_scores_are_batch_independent():
    lm = tiny_lm()
    head = ScalarHead(lm.model).eval()
    enc = encode_pairs(lm.tokenizer, preference_pairs(4, "train"))
    with torch.no_grad():
        c, r = pair_scores(head, enc)
        c0, r0 = pair_scores(head, enc[:1])
    assert torch.allclose(c[:1], c0, atol=1e-5) and torch.allclose(r[:1], r0, atol=1e-5)




@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny") / "hf"
    tiny_lm().save(directory)
    return directory


@pytest.mark.slow  # two CLI processes: ~45 s on busy cores
def test_rm_and_dpo_commands_write_their_runs(tiny_dir, tmp_path):
    common = ["--model", str(tiny_dir), "--max-steps", "2", "--train-pairs", "8", "--heldout-pairs", "8",
              "--batch-size", "4", "--eval-every", "1", "--threads", "1"]
    rm = run_cli("rm", *common, "--out", str(tmp_path / "rm"), timeout=300)
    assert rm.returncode == 0, rm.stderr
    assert "held-out pairwise accuracy" in rm.stdout
    assert load_reward_model(tmp_path / "rm" / "reward_model").score(["hi"], ["hello"]).shape == (1,)
    dpo = run_cli("dpo", *common, "--loss", "simpo", "--out", str(tmp_path / "dpo"), timeout=300)
    assert dpo.returncode == 0, dpo.stderr
    for name in ("metrics.jsonl", "summary.json", "report.md", "loss.png", "heldout_win_rate.png", "hf/config.json"):
        assert (tmp_path / "dpo" / name).is_file(), name
    summary = json.loads((tmp_path / "dpo" / "summary.json").read_text())
    assert 0 <= summary["win_rate_reference"] <= 1 and summary["steps"] == 2


@pytest.mark.parametrize("make, needle", [
    (lambda: DPOConfig(model="m", loss="kto"), "loss='kto'"),
    (lambda: DPOConfig(model="m", beta=0.0), "beta=0.0"),
    (lambda: DPOConfig(model="m", label_smoothing=0.7), "label_smoothing=0.7"),
    (lambda: RewardConfig.from_dict({"model": "m", "batch_size": 0}), "batch_size=0"),
    (lambda: RewardConfig.from_dict({"model": "m", "grad_accum": 0}), "grad_accum=0"),
    (lambda: DPOConfig.from_dict({"model": "m", "checkpoint_every": 0}), "checkpoint_every=0"),
    (lambda: DPOConfig(model="m", resume=True, fresh=True), "resume and fresh exclude each other"),
])
def test_config_errors_name_the_field(make, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        make()


def test_user_errors_exit_2(tiny_dir):
    result = run_cli("rm", "--model", str(tiny_dir), "--data", "missing.jsonl", "--max-steps", "1", timeout=300)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "missing.jsonl" in result.stderr and "Traceback" not in result.stderr
