"""Tiny random DeepseekV3ForCausalLM / Qwen3MoeForCausalLM built offline: the independent MoE/MLA reference."""

import torch

DEEPSEEK_TINY = dict(
    vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8, n_group=4, topk_group=2,
    num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=32, q_lora_rank=24, qk_rope_head_dim=8,
    v_head_dim=16, qk_nope_head_dim=16, routed_scaling_factor=2.5, max_position_embeddings=256,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)
QWEN3_MOE_TINY = dict(
    vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8, num_experts_per_tok=2,
    norm_topk_prob=True, max_position_embeddings=256, mlp_only_layers=[1],
)


def _perturb(model):
    """Every parameter and the router correction bias moved off transformers' constant initialisations."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(torch.randn_like(buf) * 0.1)
    return model.eval()


def tiny_deepseek_v3(tie: bool = False, **overrides):
    import transformers as tf

    config = tf.DeepseekV3Config(**{**DEEPSEEK_TINY, **overrides}, tie_word_embeddings=tie)
    return _perturb(tf.DeepseekV3ForCausalLM(config))


def tiny_qwen3_moe(tie: bool = False, **overrides):
    import transformers as tf

    config = tf.Qwen3MoeConfig(**{**QWEN3_MOE_TINY, **overrides}, tie_word_embeddings=tie)
    return _perturb(tf.Qwen3MoeForCausalLM(config))
