"""DeepSeekMoE / Qwen3-MoE layer: sorted dispatch equals computing every expert, routing rules, balance losses."""

import pytest
import torch
import torch.nn.functional as F

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.model import Transformer, get_preset
from lmforge.model.moe import MoE, update_router_bias


def _moe(**overrides) -> MoE:
    torch.manual_seed(0)
    cfg = get_preset("tiny-deepseek-v3", **overrides)
    moe = MoE(cfg)
    for module in (moe.router, moe.experts):
        module.reset_parameters()
    with torch.no_grad():
        moe.router.weight.normal_(std=0.3)
        if moe.router.score_bias is not None:
            moe.router.score_bias.normal_(std=0.1)
    return moe


def _every_expert_reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Run all experts on all tokens and mix them with a dense [N, E] weight matrix (zero where not routed)."""
    flat = x.reshape(-1, x.shape[-1])
    weights, ids, _ = moe.router(flat)
    dense = torch.zeros(flat.shape[0], moe.router.n_experts).scatter(1, ids, weights)
    e = moe.experts
    h = F.silu(torch.einsum("nd,efd->enf", flat, e.gate_proj)) * torch.einsum("nd,efd->enf", flat, e.up_proj)
    y = torch.einsum("enf,edf,ne->nd", h, e.down_proj, dense)
    if moe.shared is not None:
        y = y + moe.shared(flat)
    return y.view(x.shape)


@pytest.mark.parametrize("overrides", [
    {},  # sigmoid router, groups, correction bias, shared expert, scaling 2.5
    dict(router="softmax", router_score_bias=False, n_group=1, topk_group=1, n_shared_experts=0,
         routed_scaling_factor=1.0, norm_topk_prob=False),
    dict(n_experts_per_tok=3, n_group=1, topk_group=1),
])
def test_sorted_dispatch_equals_every_expert_reference(overrides):
    moe = _moe(**overrides)
    x = torch.randn(3, 11, 64)
    with torch.no_grad():
        assert (moe(x) - _every_expert_reference(moe, x)).abs().max() <= 1e-5
    assert int(moe.expert_counts.sum()) == 33 * moe.top_k


def test_correction_bias_moves_choice_not_weights():
    moe = _moe(n_group=1, topk_group=1)
    x = torch.randn(40, 64)
    with torch.no_grad():
        moe.router.score_bias.zero_()
        moe.router.score_bias[5] = 10.0  # expert 5 is always chosen ...
        weights, ids, scores = moe.router(x)
    assert bool((ids == 5).any(-1).all())
    raw = scores.gather(1, ids)  # ... but its gate weight is still its own sigmoid score, renormalised and scaled
    assert torch.allclose(weights, 2.5 * raw / raw.sum(-1, keepdim=True), atol=1e-6)


def test_group_limited_routing_stays_in_top_groups():
    moe = _moe()  # 8 experts in 4 groups, 2 groups per token
    with torch.no_grad():
        _, ids, _ = moe.router(torch.randn(200, 64))
    groups_used = torch.stack([(ids // 2 == g).any(-1) for g in range(4)], dim=-1).sum(-1)
    assert int(groups_used.max()) <= 2


def test_aux_loss_closed_form_and_gradient():
    moe = _moe(router="softmax", router_score_bias=False, n_group=1, topk_group=1, aux_loss_coef=0.01)
    with torch.no_grad():
        moe.router.weight.zero_()  # uniform probabilities: coef * E * sum_e f_e / E = coef, whatever f is
    moe(torch.randn(50, 64))
    assert abs(float(moe.aux_loss.detach()) - 0.01) < 1e-7
    moe = _moe(router="softmax", router_score_bias=False, n_group=1, topk_group=1, aux_loss_coef=0.01)
    moe(torch.randn(50, 64))
    moe.aux_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_transformer_collects_aux_loss():
    model = Transformer(get_preset("tiny-moe", aux_loss_coef=0.02))
    assert float(Transformer(get_preset("tiny-llama")).aux_loss()) == 0.0
    model(torch.randint(0, 256, (2, 9)))
    assert float(model.aux_loss().detach()) > 0.02 * 2 * 0.9  # two MoE layers, each >= ~coef (minimum at balance)


def test_layer_pattern_and_param_counts():
    cfg = get_preset("tiny-deepseek-v3")
    model = Transformer(cfg)
    assert [isinstance(layer.mlp, MoE) for layer in model.layers] == [False, True, True]
    qwen = get_preset("tiny-moe", n_layers=4, moe_layer_step=2, mlp_only_layers=[3])
    assert [isinstance(layer.mlp, MoE) for layer in Transformer(qwen).layers] == [False, True, False, False]
    for name in ("tiny-moe", "tiny-deepseek-v3"):
        cfg = get_preset(name)
        m = Transformer(cfg)
        stored = sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers())
        assert cfg.num_params() == stored
        per_expert = 3 * cfg.dim * cfg.moe.ffn_dim
        n_moe = sum(isinstance(layer.mlp, MoE) for layer in m.layers)
        inactive = n_moe * per_expert * (cfg.moe.n_routed_experts - cfg.moe.n_experts_per_tok)
        assert cfg.num_params(active=True) == stored - inactive


def test_published_sizes():
    v3, qwen = get_preset("deepseek-v3"), get_preset("qwen3-30b-a3b")
    assert abs(v3.num_params() / 671e9 - 1) < 0.01 and abs(v3.num_params(active=True) / 37e9 - 1) < 0.02
    assert abs(qwen.num_params() / 30.5e9 - 1) < 0.01 and abs(qwen.num_params(active=True) / 3.3e9 - 1) < 0.02


def test_invalid_moe_fields_are_named():
    with pytest.raises(ConfigError, match="n_experts_per_tok"):
        get_preset("tiny-moe", n_experts_per_tok=9)
    with pytest.raises(ConfigError, match="n_group"):
        get_preset("tiny-moe", n_group=3)
    with pytest.raises(ConfigError, match="router"):
        get_preset("tiny-moe", router="relu")
    with pytest.raises(ConfigError, match="mlp_only_layers"):
        get_preset("tiny-moe", mlp_only_layers=[5])
    with pytest.raises(LmforgeError, match="router_score_bias"):
        update_router_bias(Transformer(get_preset("tiny-moe")), 0.01)
