"""Schedules against their closed forms; AdamW groups: no weight decay on norms, biases or embeddings."""

import math

import pytest
import torch

from lmforge.model import Transformer, get_preset
from lmforge.train.optim import build_optimizer, split_decay_params
from lmforge.train.schedule import lr_at


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_linear_warmup(schedule):
    for s in range(10):
        assert lr_at(s, peak=1.0, max_steps=100, warmup_steps=10, schedule=schedule) == pytest.approx((s + 1) / 10)


def test_cosine_closed_form():
    peak, floor, W, N = 2e-3, 2e-4, 10, 110
    kw = dict(peak=peak, max_steps=N, warmup_steps=W, schedule="cosine", min_ratio=0.1)
    assert lr_at(W, **kw) == pytest.approx(peak)
    assert lr_at(N - 1, **kw) == pytest.approx(floor)
    mid = W + (N - 1 - W) / 2
    assert lr_at(int(mid), **kw) == pytest.approx(floor + (peak - floor) / 2 * (1 + math.cos(math.pi * 0.5)),
                                                  rel=0.05)
    for s in (30, 57, 80):
        t = (s - W) / (N - 1 - W)
        assert lr_at(s, **kw) == pytest.approx(floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * t)))
    values = [lr_at(s, **kw) for s in range(W, N)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_wsd_closed_form():
    kw = dict(peak=1.0, max_steps=101, warmup_steps=10, schedule="wsd", min_ratio=0.0, decay_fraction=0.2)
    # decay over the last 20 steps: stable up to step 80, then linear to 0 at step 100
    assert all(lr_at(s, **kw) == 1.0 for s in range(10, 81))
    for s in (85, 90, 95, 100):
        assert lr_at(s, **kw) == pytest.approx(1.0 - (s - 80) / 20)


def test_no_decay_on_norms_biases_embeddings():
    cfg = get_preset("tiny-qwen2", tie_embeddings=False)  # q/k/v biases, untied lm_head
    model = Transformer(cfg)
    decay, no_decay = split_decay_params(model)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay}
    no_decay_names = {names[id(p)] for p in no_decay}
    assert all("norm" not in n and not n.endswith("bias") and not n.startswith("embed") for n in decay_names)
    assert {"embed.weight"} <= no_decay_names and any(n.endswith("bias") for n in no_decay_names)
    assert "lm_head.weight" in decay_names and "layers.0.attn.q_proj.weight" in decay_names
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    # Behaviour: with zero gradients AdamW's update is pure decoupled decay, p <- p * (1 - lr * wd).
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5, betas=(0.9, 0.95), eps=1e-8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        expected = before[n] * (1 - 0.1 * 0.5) if n in decay_names else before[n]
        torch.testing.assert_close(p.detach(), expected)
