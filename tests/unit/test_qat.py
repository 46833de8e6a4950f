"""QAT pays off: fine-tuning with fake int4 quantization, then converting, beats post-training quantization."""

import copy

import pytest
import torch
import torch.nn.functional as F

from lmforge.model import Transformer, get_preset
from lmforge.quant.int_linear import quantize_model
from lmforge.quant.qat import convert_qat, enable_qat

BATCH = 32


def markov_sequences(transitions: torch.Tensor, n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """Token sequences from a first-order Markov chain: a task whose best loss is the chain's entropy."""
    x = torch.empty(n, length, dtype=torch.long)
    x[:, 0] = torch.randint(0, transitions.shape[0], (n,), generator=gen)
    for t in range(1, length):
        x[:, t] = torch.multinomial(transitions[x[:, t - 1]], 1, generator=gen)[:, 0]
    return x


def lm_loss(model, x):
    logits = model(x[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))


def train(model, data, steps, lr, start=0):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for i in range(start, start + steps):
        loss = lm_loss(model, data[(i * BATCH) % len(data):][:BATCH])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.slow
def test_qat_then_convert_beats_post_training_quantization():
    cfg = get_preset("tiny-llama")
    gen = torch.Generator().manual_seed(0)
    transitions = torch.softmax(torch.randn(cfg.vocab_size, cfg.vocab_size, generator=gen) * 3, dim=-1)
    data, held_out = markov_sequences(transitions, 2048, 33, gen), markov_sequences(transitions, 256, 33, gen)
    torch.manual_seed(1)
    base = train(Transformer(cfg), data, steps=120, lr=1e-2)
    # Same budget for both branches: 40 more steps in float then quantize (PTQ), or 40 steps with QAT then convert.
    ptq = train(copy.deepcopy(base), data, steps=40, lr=1e-3, start=120)
    qat = train(enable_qat(copy.deepcopy(base), bits=4, group_size=64, head_bits=4), data, 40, 1e-3, start=120)
    with torch.no_grad():
        float_loss = lm_loss(ptq, held_out).item()
        ptq_loss = lm_loss(quantize_model(ptq, bits=4, group_size=64, head_bits=4), held_out).item()
        qat_loss = lm_loss(convert_qat(qat), held_out).item()
    print(f"\nheld-out loss: float {float_loss:.4f}, int4 PTQ {ptq_loss:.4f}, int4 QAT {qat_loss:.4f}")
    assert ptq_loss > float_loss  # quantization costs something on this model...
    assert qat_loss < ptq_loss  # ...and QAT recovers part of it
