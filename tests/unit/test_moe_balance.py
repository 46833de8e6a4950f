"""Auxiliary-loss-free load balancing (DeepSeek-V3): bias updates make expert loads more even on skewed data."""

import pytest
import torch
import torch.nn.functional as F

from lmforge.model import Transformer, get_preset
from lmforge.model.moe import moe_layers, update_router_bias

VOCAB = 64


def _skewed_batch(gen: torch.Generator) -> torch.Tensor:
    """Zipf-distributed start tokens (a few dominate), then a deterministic successor rule to learn."""
    probs = 1.0 / torch.arange(1, VOCAB + 1).float() ** 1.5
    start = torch.multinomial(probs, 16, replacement=True, generator=gen)
    steps = torch.arange(12)
    return (start[:, None] * 5 ** (steps % 2) + steps) % VOCAB  # [16, 12]


def _train(gamma: float | None, steps: int = 200) -> float:
    """Max/mean expert load over the last 40 steps, all MoE layers."""
    torch.manual_seed(0)
    cfg = get_preset("tiny-deepseek-v3", vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, head_dim=8,
                     q_lora_rank=None, kv_lora_rank=16, qk_nope_head_dim=8, v_head_dim=8, ffn_dim=64, moe_ffn_dim=16,
                     n_group=1, topk_group=1, first_k_dense_replace=0, n_shared_experts=0)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    load = torch.zeros(cfg.moe.n_routed_experts)
    for step in range(steps):
        ids = _skewed_batch(gen)
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= steps - 40:
            load += sum(m.expert_counts.float() for m in moe_layers(model))
        if gamma is not None:
            update_router_bias(model, gamma)
    return float(load.max() / load.mean())


@pytest.mark.slow  # a few hundred optimizer steps (~10 s on a busy 2-core machine)
def test_bias_updates_even_out_expert_load():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is ~10x faster than two on a busy 2-core machine
    try:
        without = _train(gamma=None)
        with_bias = _train(gamma=0.01)
    finally:
        torch.set_num_threads(threads)
    print(f"max/mean expert load over the last 40 steps: without bias updates {without:.2f}, with {with_bias:.2f}")
    assert with_bias < without
    assert with_bias < 1.3
