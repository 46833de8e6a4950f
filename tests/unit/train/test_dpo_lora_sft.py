"""The safety DPO recipe's knobs (issue 26): the SFT term on the chosen answers (RPO; TRL's rpo_alpha) against its
closed form, `lmforge dpo --lora-r` training only the adapters (the merged export differs from the base in the
adapted projections alone), and the reference pass's length-sorted batches giving each pair its own log-probs."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from lmforge.data.tasks.preferences import preference_pairs
from lmforge.train.metrics import read_metrics
from lmforge.train.post.dpo import DPOConfig, pair_logprobs, train_dpo
from lmforge.train.post.pairs import collate_pairs, encode_pairs, sequence_logprobs
from lmforge.train.post.preference_losses import dpo_loss, preference_loss
from tests.cli_util import assert_user_error, run_cli
from tests.tiny_lm import tiny_lm

PC, PR, RC, RR = [-4.0, -7.5], [-6.0, -5.0], [-5.0, -7.0], [-5.5, -6.0]
LC, LR = [4.0, 5.0], [6.0, 2.0]


def t(values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def test_sft_term_closed_form():
    beta, alpha = 0.5, 0.7
    out = preference_loss("dpo", t(PC), t(PR), t(RC), t(RR), t(LC), t(LR), beta=beta, sft_weight=alpha)
    dpo = sum(math.log(1 + math.exp(-beta * ((PC[i] - RC[i]) - (PR[i] - RR[i])))) for i in range(2)) / 2
    nll = sum(-PC[i] / LC[i] for i in range(2)) / 2  # the chosen answers' NLL per token, averaged over the pairs
    assert float(out.loss) == pytest.approx(dpo + alpha * nll, rel=1e-12)
    assert out.stats()["chosen_nll"] == pytest.approx(nll)
    plain = dpo_loss(t(PC), t(PR), t(RC), t(RR), beta)  # the rewards are DPO's, and weight 0 is DPO itself
    assert out.margins.tolist() == pytest.approx(plain.margins.tolist())
    off = preference_loss("dpo", t(PC), t(PR), t(RC), t(RR), t(LC), t(LR), beta=beta)
    assert float(off.loss) == float(plain.loss) and "chosen_nll" not in off.stats()
    pc = t(PC, grad=True)  # d/d log pi(y_w): DPO's gradient plus -alpha / (2 |y_w|) for each pair
    preference_loss("dpo", pc, t(PR), t(RC), t(RR), t(LC), t(LR), beta=beta, sft_weight=alpha).loss.backward()
    pc0 = t(PC, grad=True)
    dpo_loss(pc0, t(PR), t(RC), t(RR), beta).loss.backward()
    assert (pc.grad - pc0.grad).tolist() == pytest.approx([-alpha / (2 * LC[i]) for i in range(2)])


def test_reference_pass_batches_by_length_and_keeps_the_order():
    lm = tiny_lm()
    enc = encode_pairs(lm.tokenizer, preference_pairs(7, "train"))
    chosen, rejected = pair_logprobs(lm.model, enc, batch_size=3)
    with torch.no_grad():
        for i, pair in enumerate(enc):
            alone, _ = sequence_logprobs(lm.model, collate_pairs([pair]))
            assert float(chosen[i]) == pytest.approx(float(alone[0]), abs=1e-4)
            assert float(rejected[i]) == pytest.approx(float(alone[1]), abs=1e-4)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny") / "hf"
    tiny_lm().save(directory)
    return directory


def test_dpo_lora_with_sft_weight_trains_only_the_adapters(tiny_dir, tmp_path):
    out, lines = tmp_path / "dpo", []
    cfg = DPOConfig.from_dict(dict(model=str(tiny_dir), out=str(out), max_steps=2, train_pairs=8, heldout_pairs=4,
                                   batch_size=4, eval_every=2, threads=1, progress=False, lr=1e-2, lora_r=4,
                                   lora_targets=["q_proj", "v_proj"], sft_weight=0.5))
    train_dpo(cfg, log=lines.append)
    assert any(line.startswith("LoRA r=4") for line in lines)
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4
    train = [r for r in read_metrics(out / "metrics.jsonl") if r.get("kind") == "train"]
    assert len(train) == 2 and all(r["chosen_nll"] > 0 for r in train)
    base, merged = load_file(tiny_dir / "model.safetensors"), load_file(out / "hf" / "model.safetensors")
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    assert changed and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed), changed


@pytest.mark.parametrize("flags, needle", [(("--lora-r", "4", "--base-bits", "4"), "base_bits=4"),
                                           (("--sft-weight", "-1"), "sft_weight=-1")])
def test_dpo_flag_errors_name_the_value(tiny_dir, tmp_path, flags, needle):
    assert_user_error(run_cli("dpo", "--model", str(tiny_dir), "--out", str(tmp_path / "q"), *flags), needle)


@pytest.mark.parametrize("weight", [math.inf, math.nan, -0.5])
def test_sft_weight_must_be_finite_and_non_negative(weight):
    from lmforge.common.errors import ConfigError

    with pytest.raises(ConfigError, match="sft_weight"):
        DPOConfig(model="m", sft_weight=weight)
