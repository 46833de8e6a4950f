"""The chunked (fused linear) cross-entropy equals F.cross_entropy on the full logits, values and gradients, in fp32
and bf16, with ignored labels and chunks that do not divide the rows; the training step uses it for a plain LM
head and falls back to the model's own forward otherwise."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model_config

from lmforge.model import Transformer
from lmforge.train import step as step_module
from lmforge.train.chunked_ce import linear_cross_entropy
from lmforge.train.step import IGNORE_INDEX, accumulate_gradients, plain_lm_head


def _inputs(dtype):
    torch.manual_seed(0)
    hidden = torch.randn(2, 75, 48).to(dtype).requires_grad_()
    weight = (torch.randn(500, 48) * 0.3).to(dtype).requires_grad_()
    labels = torch.randint(0, 500, (2, 75))
    labels[:, ::5] = IGNORE_INDEX
    return hidden, weight, labels


def _reference(hidden, weight, labels):
    logits = hidden @ weight.T  # in hidden's dtype, as the model's head makes them; the loss in fp32
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                           reduction="sum")


# fp32: summation order only. bf16: gradients are rounded to bf16 in both (one ulp apart at most)
@pytest.mark.parametrize(("dtype", "rtol", "atol"), [(torch.float32, 1e-5, 1e-6), (torch.bfloat16, 1e-2, 4e-3)])
@pytest.mark.parametrize("chunk_rows", [16, 64, 1000])
def test_values_and_gradients_equal_cross_entropy_on_full_logits(dtype, rtol, atol, chunk_rows):
    hidden, weight, labels = _inputs(dtype)
    want = _reference(hidden, weight, labels)
    want_grads = torch.autograd.grad(want * 0.37, (hidden, weight))
    got = linear_cross_entropy(hidden, weight, labels, chunk_rows=chunk_rows)
    got_grads = torch.autograd.grad(got * 0.37, (hidden, weight))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-3)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g.float(), w.float(), rtol=rtol, atol=atol)


def test_all_ignored_rows_give_zero_loss_and_zero_gradients():
    hidden, weight, labels = _inputs(torch.float32)
    loss = linear_cross_entropy(hidden, weight, torch.full_like(labels, IGNORE_INDEX), chunk_rows=32)
    loss.backward()
    assert float(loss.detach()) == 0.0 and not hidden.grad.any() and not weight.grad.any()


def test_without_grad_it_only_computes_the_loss():
    hidden, weight, labels = _inputs(torch.float32)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, labels)
    torch.testing.assert_close(loss, _reference(hidden, weight, labels).detach(), rtol=1e-6, atol=1e-3)


def test_the_training_step_uses_it_for_a_plain_head_and_gets_the_same_gradients(monkeypatch):
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(96))
    assert plain_lm_head(model) is model.lm_head
    x, y = torch.randint(0, 96, (3, 20)), torch.randint(0, 96, (3, 20))
    y[0, :5] = IGNORE_INDEX
    loss, count = accumulate_gradients(model, [(x, y)])
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    monkeypatch.setattr(step_module, "plain_lm_head", lambda model: None)  # the full-logits path
    loss_ref, count_ref = accumulate_gradients(model, [(x, y)])
    assert count == count_ref == 55
    assert abs(loss - loss_ref) < 1e-5
    for name, p in model.named_parameters():
        torch.testing.assert_close(fused[name], p.grad, rtol=1e-4, atol=1e-6)


def test_heads_with_more_than_a_matmul_keep_the_models_forward():
    cfg = tiny_model_config(96)
    capped = dataclasses.replace(cfg, heads=dataclasses.replace(cfg.heads, final_logit_softcap=30.0))
    assert plain_lm_head(Transformer(capped)) is None
    assert plain_lm_head(torch.nn.Sequential(Transformer(cfg))) is None
