"""Activation checkpointing recomputes blocks without changing gradients or parameter names; bf16 autocast on
CPU gives gradients close to fp32."""

import torch
from conftest import tiny_model_config

from lmforge.model import Transformer
from lmforge.train.activation_checkpoint import apply_activation_checkpointing
from lmforge.train.step import accumulate_gradients


def _grads(model, x, y, autocast=None):
    model.zero_grad(set_to_none=True)
    kw = {"autocast": autocast} if autocast else {}
    loss, _ = accumulate_gradients(model, [(x, y)], **kw)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_activation_checkpointing_same_gradients():
    model = Transformer(tiny_model_config(96))
    x, y = torch.randint(0, 96, (3, 20)), torch.randint(0, 96, (3, 20))
    loss, ref = _grads(model, x, y)
    names = list(model.state_dict())
    assert apply_activation_checkpointing(model) == len(model.layers)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss_ckpt, got = _grads(model, x, y)
    assert list(model.state_dict()) == names
    assert loss_ckpt == loss
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-5, atol=1e-7)
    # fewer tensors kept for backward than without checkpointing
    plain_saved = []
    plain = Transformer(tiny_model_config(96))
    with torch.autograd.graph.saved_tensors_hooks(lambda t: plain_saved.append(t) or t, lambda t: t):
        _grads(plain, x, y)
    assert len(saved) < len(plain_saved)


def test_bf16_autocast_on_cpu_close_to_fp32():
    model = Transformer(tiny_model_config(96))
    x, y = torch.randint(0, 96, (3, 20)), torch.randint(0, 96, (3, 20))
    loss, ref = _grads(model, x, y)
    loss_bf16, got = _grads(model, x, y, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert abs(loss_bf16 - loss) < 0.05
    for n in ref:
        cos = torch.nn.functional.cosine_similarity(got[n].flatten(), ref[n].flatten(), dim=0)
        assert cos > 0.95, n
