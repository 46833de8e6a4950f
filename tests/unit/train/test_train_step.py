"""Gradient accumulation: the loss is normalised by the global target-token count, so micro-batches with
unequal numbers of valid tokens give exactly the gradient of one full batch, and padding changes nothing."""

import torch
import torch.nn.functional as F
from conftest import tiny_model_config

from lmforge.model import Transformer
from lmforge.train.step import IGNORE_INDEX, accumulate_gradients


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _batch(B=8, T=16, V=96):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (B, T), generator=g)
    y = torch.randint(0, V, (B, T), generator=g)
    for row, valid in enumerate([16, 3, 9, 1, 12, 16, 5, 7]):  # unequal valid-token counts per row
        y[row, valid:] = IGNORE_INDEX
    return x, y


def test_accumulated_micro_batches_equal_one_full_batch():
    model = Transformer(tiny_model_config(96))
    x, y = _batch()
    loss_full, n_full = accumulate_gradients(model, [(x, y)])
    full = _grads(model)
    model.zero_grad(set_to_none=True)
    micro = [(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)]
    loss_acc, n_acc = accumulate_gradients(model, micro)
    acc = _grads(model)
    # Reference: torch's own mean over valid tokens of the full batch.
    reference = F.cross_entropy(model(x).reshape(-1, 96), y.reshape(-1), ignore_index=IGNORE_INDEX)
    assert n_full == n_acc == int((y != IGNORE_INDEX).sum())
    assert abs(loss_full - reference.item()) < 1e-5 and abs(loss_acc - loss_full) < 1e-5
    for name in full:
        torch.testing.assert_close(acc[name], full[name], rtol=1e-4, atol=1e-7)
    # The common bug (a mean of per-micro-batch means) would NOT match: the test can tell them apart.
    model.zero_grad(set_to_none=True)
    for xm, ym in micro:
        (F.cross_entropy(model(xm).reshape(-1, 96), ym.reshape(-1), ignore_index=IGNORE_INDEX) / 4).backward()
    wrong = _grads(model)
    assert not all(torch.allclose(wrong[n], full[n], rtol=1e-4, atol=1e-7) for n in full)


def test_padding_with_ignored_labels_changes_nothing():
    model = Transformer(tiny_model_config(96))
    x, y = _batch()
    loss, _ = accumulate_gradients(model, [(x, y)])
    ref = _grads(model)
    model.zero_grad(set_to_none=True)
    # Right-pad every row by 5 positions and add a row that is all padding, all labelled IGNORE_INDEX.
    xp = torch.cat([x, torch.zeros(8, 5, dtype=torch.long)], dim=1)
    yp = torch.cat([y, torch.full((8, 5), IGNORE_INDEX)], dim=1)
    xp = torch.cat([xp, torch.zeros(1, 21, dtype=torch.long)])
    yp = torch.cat([yp, torch.full((1, 21), IGNORE_INDEX)])
    loss_padded, n = accumulate_gradients(model, [(xp, yp)])
    assert n == int((y != IGNORE_INDEX).sum())
    assert abs(loss_padded - loss) < 1e-6
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, ref[name], rtol=1e-4, atol=1e-7)
