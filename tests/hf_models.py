"""Tiny random-weight transformers models built offline from configs: the independent reference."""

import torch

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)


def tiny_hf_model(family: str, tie: bool, noise: float = 0.05, **overrides):
    """A random transformers LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM, every parameter perturbed by
    N(0, noise) (biases and norm weights too, which transformers initialises to constants). noise 0.3: greedy
    continuations depend on the whole context (tests/context_lm.py), as a cache test needs."""
    import transformers as tf

    config_cls, model_cls = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
    }[family]
    extra = {"head_dim": 32} if family == "qwen3" else {}
    config = config_cls(**{**TINY, **extra, **overrides}, tie_word_embeddings=tie)
    model = model_cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model
