"""Tiny random Mistral / Gemma3 / BERT transformers models built offline, every parameter perturbed."""

import torch

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=256)


def _perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def tiny_mistral(sliding_window: int = 8, tie: bool = False, **overrides):
    import transformers as tf

    config = tf.MistralConfig(**{**TINY, "num_key_value_heads": 2, "sliding_window": sliding_window, **overrides},
                              tie_word_embeddings=tie)
    return _perturb(tf.MistralForCausalLM(config))


def tiny_gemma3(**overrides):
    import transformers as tf

    config = tf.Gemma3TextConfig(**{
        **TINY, "num_hidden_layers": 6, "num_key_value_heads": 2, "head_dim": 32, "query_pre_attn_scalar": 24,
        "sliding_window": 6, "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                                 "full_attention": {"rope_type": "default", "rope_theta": 1e6}},
        "final_logit_softcapping": 30.0, "pad_token_id": 0, **overrides})
    return _perturb(tf.Gemma3ForCausalLM(config))


def tiny_bert(**overrides):
    import transformers as tf

    config = tf.BertConfig(**{**TINY, "max_position_embeddings": 64, **overrides})
    return _perturb(tf.BertForMaskedLM(config))
