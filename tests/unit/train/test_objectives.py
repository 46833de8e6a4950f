"""The objectives beside next-token loss, wired into pretraining: MoE balance loss, aux-loss-free router-bias
updates, multi-token prediction and masked LM. Each is checked against an independent computation or a metric
that must move."""

import json

import pytest
import torch
from safetensors.torch import load_file

import lmforge
from lmforge.data.mlm import IGNORE_INDEX
from lmforge.model import Transformer, get_preset
from lmforge.model.moe import moe_aux_loss, moe_layers
from lmforge.model.mtp import forward_with_hidden, mtp_loss
from lmforge.train.activation_checkpoint import apply_activation_checkpointing
from lmforge.train.config import TrainConfig
from lmforge.train.objectives import MTPTrainingModel, build_objective
from lmforge.train.pretrain import pretrain
from lmforge.train.step import token_loss_sum


def _grads(module, loss):
    module.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_moe_aux_loss_reaches_the_router_gradient():
    """grad(CE + objective) - grad(CE) == grad(aux loss computed on its own) for every router weight."""
    model = Transformer(get_preset("tiny-moe", aux_loss_coef=0.05))
    train_module, objective = build_objective(model)
    assert train_module is model and objective.extra_losses is not None
    x = torch.randint(0, 256, (2, 12))
    y = torch.roll(x, -1, 1)
    plain = _grads(model, token_loss_sum(model(x), y))
    both = _grads(model, token_loss_sum(model(x), y) + objective.extra_losses(model))
    logits = model(x)  # noqa: F841 (the forward records the routing the aux loss is computed from)
    aux_only = _grads(model, moe_aux_loss(model))
    routers = [n for n in aux_only if "router" in n]
    assert routers
    for name in routers:
        torch.testing.assert_close(both[name] - plain[name], aux_only[name], atol=1e-6, rtol=1e-4)
    assert objective.stats()["moe_aux_loss"] > 0


def test_mtp_objective_equals_mtp_loss_and_trains_the_mtp_modules():
    torch.manual_seed(0)
    model = Transformer(get_preset("tiny-deepseek-v3"))
    wrapper, objective = build_objective(model, router_bias_rate=0.0)
    assert isinstance(wrapper, MTPTrainingModel) and objective.after_step is None
    x = torch.randint(0, 256, (2, 10))
    logits = wrapper(x)
    ref_logits, hidden = forward_with_hidden(model, x)
    torch.testing.assert_close(logits, ref_logits)
    expected = mtp_loss(model, wrapper.mtp, x, hidden)
    torch.testing.assert_close(objective.extra_losses(wrapper), expected)
    grads = _grads(wrapper, objective.extra_losses(wrapper))
    assert any(n.startswith("mtp.") for n in grads) and any(n.startswith("model.layers") for n in grads)
    # FSDP and activation checkpointing reach the blocks through .layers, without a second copy in the state
    assert wrapper.layers is model.layers and not any(k.startswith("layers.") for k in wrapper.state_dict())
    assert apply_activation_checkpointing(wrapper) == model.config.n_layers
    torch.testing.assert_close(wrapper(x), logits)


@pytest.fixture(scope="module")
def deepseek_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    cfg = TrainConfig.from_dict(dict(out=str(out), preset="tiny-deepseek-v3", corpus_documents=1500, max_steps=24,
                                     eval_every=12, log_every=6, sample_every=100, checkpoint_every=100,
                                     warmup_steps=4, precision="fp32", progress=False, router_bias_rate=0.01))
    return out, pretrain(cfg, log=lambda m: None)


def test_pretraining_a_deepseek_model_trains_mtp_and_moves_the_router_bias(deepseek_run):
    out, summary = deepseek_run
    assert summary["status"] == "finished"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert all("mtp_loss" in r and "expert_load_max_over_mean" in r for r in train)
    assert train[-1]["mtp_loss"] < train[0]["mtp_loss"]  # the MTP modules learn
    ckpt = sorted((out / "checkpoints").iterdir())[-1]
    tensors = load_file(next(ckpt.glob("model*.safetensors")))
    biases = [v for k, v in tensors.items() if k.endswith("score_bias")]
    assert biases and all(b.abs().sum() > 0 for b in biases)  # 24 updates of +-0.01 moved them
    for b in biases:  # sign updates: every entry is a multiple of the rate
        assert torch.allclose(b / 0.01, (b / 0.01).round(), atol=1e-3)
    assert any(k.startswith("mtp.") for k in tensors)  # the checkpoint keeps the MTP modules
    exported = lmforge.load(str(out / "hf")).model  # the export is the main model, with the trained bias
    got = {k: v for k, v in exported.state_dict().items() if k.endswith("score_bias")}
    for name, value in got.items():
        torch.testing.assert_close(value, tensors["model." + name])
    mtp = lmforge.load(str(out / "hf")).mtp  # the export keeps the trained MTP modules too (mtp.safetensors)
    assert mtp is not None and len(mtp.depths) == 1
    for name, value in mtp.state_dict().items():
        torch.testing.assert_close(value, tensors["mtp." + name])


def test_mlm_pretraining_of_an_encoder_beats_the_unigram_baseline(tmp_path):
    cfg = TrainConfig.from_dict(dict(out=str(tmp_path), preset="tiny-bert", corpus_documents=2500, max_steps=250,
                                     eval_every=125, log_every=25, sample_every=1000, checkpoint_every=1000,
                                     warmup_steps=10, precision="fp32", progress=False))
    summary = pretrain(cfg, log=lambda m: None)
    val = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
           if '"val"' in line]
    print(f"MLM validation loss {[round(r['val_loss'], 3) for r in val]}, unigram {summary['unigram_entropy']:.3f}")
    # ln(2048) = 7.62 at a uniform start; masked tokens predicted better than their frequencies alone allow
    assert val[-1]["val_loss"] < summary["unigram_entropy"]
    lm = lmforge.load(str(tmp_path / "hf"))
    mask_id = lm.tokenizer.token_to_id("[MASK]")
    assert mask_id is not None
    _, objective = build_objective(lm.model, lm.tokenizer, seed=3)
    x = torch.randint(5, 2000, (4, 64))
    a, b, c = (objective.corrupt(x, x, i) for i in (7, 7, 8))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])  # seeded by the batch index (exact resume)
    targets = a[1] != IGNORE_INDEX
    assert 0.05 < targets.float().mean() < 0.3 and torch.equal(a[1][targets], x[targets])
    assert ((a[0] == mask_id) & ~targets).sum() == 0  # only targets are masked


def test_router_bias_update_balances_load_during_training():
    """A router skewed towards two experts stays skewed without the aux-loss-free update and is rebalanced with it.

    (At random init the sigmoid scores differ by ~1e-2, so loads are already near balance and comparing them says
    little; the skew makes the update's direction and effect measurable.)"""
    def worst_loads(rate):
        torch.manual_seed(0)
        model = Transformer(get_preset("tiny-deepseek-v3", n_mtp_modules=0))
        for m in moe_layers(model):
            m.router.score_bias[:2] = 0.5  # experts 0 and 1 win every token's choice
        module, objective = build_objective(model, router_bias_rate=rate)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(0, 256, (8, 32))
        worst = []
        for _ in range(40):
            loss = token_loss_sum(module(x), torch.roll(x, -1, 1)) / x.numel()
            loss.backward()
            opt.step()
            opt.zero_grad()
            if objective.after_step:
                objective.after_step()
            counts = torch.stack([m.expert_counts.float() for m in moe_layers(model)])
            worst.append(float((counts.max(1).values / counts.mean(1)).max()))
        assert "expert_load_max_over_mean" in objective.stats()  # logged even with no auxiliary loss
        return sum(worst[-10:]) / 10  # the worst layer's max load over mean, over the last 10 steps

    without, with_bias = worst_loads(0.0), worst_loads(0.02)
    print(f"worst expert load / mean: {without:.2f} without bias updates, {with_bias:.2f} with")
    assert without > 3.5 and with_bias < 2.5
