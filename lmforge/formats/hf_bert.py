"""Hugging Face adapter for BERT masked-LM encoders (`BertForMaskedLM`, Devlin et al., 2019).

BERT = post-norm blocks with LayerNorm (with bias), learned absolute positions, token-type embeddings, an embedding
LayerNorm, an erf-GELU MLP with biases, bidirectional attention and the MLM head (transform + decoder with bias).
"""

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf_names import NameTable, hf_shape_fields
from lmforge.model.config import ModelConfig

_ACTS = {"gelu": "gelu_erf", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}

_PAIRS = [
    ("bert.embeddings.word_embeddings.weight", "embed.weight"),
    ("bert.embeddings.position_embeddings.weight", "extras.pos_embed.weight"),
    ("bert.embeddings.token_type_embeddings.weight", "extras.type_embed.weight"),
    ("cls.predictions.transform.dense.weight", "head_transform.dense.weight"),
    ("cls.predictions.transform.dense.bias", "head_transform.dense.bias"),
    ("cls.predictions.decoder.weight", "lm_head.weight"),
    ("cls.predictions.bias", "lm_head.bias"),
]
for _kind in ("weight", "bias"):
    _PAIRS += [
        (f"bert.embeddings.LayerNorm.{_kind}", f"extras.norm.{_kind}"),
        (f"cls.predictions.transform.LayerNorm.{_kind}", f"head_transform.norm.{_kind}"),
        (f"bert.encoder.layer.{{i}}.attention.self.query.{_kind}", f"layers.{{i}}.attn.q_proj.{_kind}"),
        (f"bert.encoder.layer.{{i}}.attention.self.key.{_kind}", f"layers.{{i}}.attn.k_proj.{_kind}"),
        (f"bert.encoder.layer.{{i}}.attention.self.value.{_kind}", f"layers.{{i}}.attn.v_proj.{_kind}"),
        (f"bert.encoder.layer.{{i}}.attention.output.dense.{_kind}", f"layers.{{i}}.attn.o_proj.{_kind}"),
        (f"bert.encoder.layer.{{i}}.attention.output.LayerNorm.{_kind}", f"layers.{{i}}.attn_norm.{_kind}"),
        (f"bert.encoder.layer.{{i}}.intermediate.dense.{_kind}", f"layers.{{i}}.mlp.up_proj.{_kind}"),
        (f"bert.encoder.layer.{{i}}.output.dense.{_kind}", f"layers.{{i}}.mlp.down_proj.{_kind}"),
        (f"bert.encoder.layer.{{i}}.output.LayerNorm.{_kind}", f"layers.{{i}}.mlp_norm.{_kind}"),
    ]
# decoder.bias is the same tensor as cls.predictions.bias; the pooler and NSP head are not used by the MLM model.
NAMES = NameTable(_PAIRS, ignored=(r"cls.predictions.decoder.bias", r"bert.pooler.*", r"cls.seq_relationship.*",
                                   r"bert.embeddings.position_ids"))


def bert_config_from_hf(hf: dict) -> ModelConfig:
    act = hf.get("hidden_act", "gelu")
    if act not in _ACTS:
        raise LmforgeError(f"unsupported BERT hidden_act {act!r}; supported: {', '.join(_ACTS)}")
    if hf.get("position_embedding_type", "absolute") != "absolute" or hf.get("is_decoder"):
        raise LmforgeError("only absolute-position BERT encoders (is_decoder=False) are supported")
    n_heads = hf["num_attention_heads"]
    return ModelConfig.from_flat(
        family="bert",
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=n_heads,
        ffn_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 512),
        norm="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        mlp=_ACTS[act],
        mlp_bias=True,
        qkv_bias=True,
        o_bias=True,
        pos_embedding="learned",
        type_vocab_size=hf.get("type_vocab_size", 2),
        embed_norm=True,
        norm_position="post",
        causal=False,
        mlm_head=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        pad_token_id=hf.get("pad_token_id"),
    )


def bert_config_to_hf(cfg: ModelConfig, dtype: torch.dtype) -> dict:
    fixed = dict(norm="layernorm", mlp_bias=True, qkv_bias=True, o_bias=True, pos_embedding="learned",
                 embed_norm=True, norm_position="post", causal=False, mlm_head=True, qk_norm=False,
                 embed_scale=False, sliding_window=None, logn_train_len=None)
    flat = cfg.to_flat()  # the switches by their flat names, as the message shows them
    wrong = {k: flat.get(k) for k, v in fixed.items() if flat.get(k) != v}
    back = {v: k for k, v in _ACTS.items() if k != "gelu_new"}
    if wrong or cfg.ffn.kind not in back or cfg.resolved_kv_heads != cfg.n_heads or cfg.embeddings.type_vocab_size == 0:
        raise LmforgeError(f"bert export needs {fixed}, mlp in {sorted(back)}, n_kv_heads == n_heads and token "
                           f"types; got {wrong}, mlp={cfg.ffn.kind!r}")
    return {
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        **hf_shape_fields(cfg),
        "hidden_act": back[cfg.ffn.kind],
        "type_vocab_size": cfg.embeddings.type_vocab_size,
        "layer_norm_eps": cfg.norms.eps,
        "position_embedding_type": "absolute",
        "is_decoder": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
