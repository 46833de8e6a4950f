"""Shared pieces of the vision parity tests: perturbing transformers' random weights so that biases, norms and
probes are not their constant initial values (parity then checks every tensor's role)."""

import pytest
import torch


def perturb(model, noise: float = 0.05):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model.eval()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
