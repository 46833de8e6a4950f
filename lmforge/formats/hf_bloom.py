"""Hugging Face adapter for BLOOM (`BloomForCausalLM`, BigScience 2022): the ALiBi decoder.

BLOOM = pre-norm blocks with LayerNorm (with bias), an embedding LayerNorm, ALiBi positions (no position vectors),
attention and a 4x tanh-GELU MLP with biases, tied LM head. Its fused query_key_value weight interleaves q, k, v
per head ([heads, 3, head_dim] output rows); it is split into lmforge's q/k/v projections on load and fused back
on save.
"""

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf_names import NameTable
from lmforge.model.config import ModelConfig

SIZE_KEYS = ("vocab_size", "hidden_size", "n_layer", "n_head")  # BLOOM's names for the sizes every config has

_PAIRS = [
    ("transformer.word_embeddings.weight", "embed.weight"),
    ("lm_head.weight", "lm_head.weight"),
]
for _kind in ("weight", "bias"):
    _PAIRS += [
        (f"transformer.word_embeddings_layernorm.{_kind}", f"extras.norm.{_kind}"),
        (f"transformer.ln_f.{_kind}", f"norm.{_kind}"),
        (f"transformer.h.{{i}}.input_layernorm.{_kind}", f"layers.{{i}}.attn_norm.{_kind}"),
        (f"transformer.h.{{i}}.post_attention_layernorm.{_kind}", f"layers.{{i}}.mlp_norm.{_kind}"),
        (f"transformer.h.{{i}}.self_attention.q.{_kind}", f"layers.{{i}}.attn.q_proj.{_kind}"),
        (f"transformer.h.{{i}}.self_attention.k.{_kind}", f"layers.{{i}}.attn.k_proj.{_kind}"),
        (f"transformer.h.{{i}}.self_attention.v.{_kind}", f"layers.{{i}}.attn.v_proj.{_kind}"),
        (f"transformer.h.{{i}}.self_attention.dense.{_kind}", f"layers.{{i}}.attn.o_proj.{_kind}"),
        (f"transformer.h.{{i}}.mlp.dense_h_to_4h.{_kind}", f"layers.{{i}}.mlp.up_proj.{_kind}"),
        (f"transformer.h.{{i}}.mlp.dense_4h_to_h.{_kind}", f"layers.{{i}}.mlp.down_proj.{_kind}"),
    ]
_FUSED = "self_attention.query_key_value."


class BloomNames:
    """NameTable's interface (from_hf / to_hf_state) with the fused QKV split and re-fused around the renaming."""

    def __init__(self, n_heads: int):
        self.table = NameTable(_PAIRS)
        self.n_heads = n_heads

    def from_hf(self, hf_state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
        split = {}
        for name, tensor in hf_state.items():
            if _FUSED not in name:
                split[name] = tensor
                continue
            # [H * 3 * D, ...] rows ordered (head, q|k|v, channel) -> three [H * D, ...] tensors
            parts = tensor.view(self.n_heads, 3, -1, *tensor.shape[1:])
            for j, qkv in enumerate("qkv"):
                split[name.replace("query_key_value", qkv)] = parts[:, j].reshape(-1, *tensor.shape[1:])
        return self.table.from_hf(split, family)

    def to_hf_state(self, state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
        hf = self.table.to_hf_state(state, family)
        for name in [n for n in hf if ".self_attention.q." in n]:
            q, k, v = (hf.pop(name.replace(".q.", f".{p}.")) for p in "qkv")
            stacked = torch.stack([t.view(self.n_heads, -1, *t.shape[1:]) for t in (q, k, v)], dim=1)
            hf[name.replace(".q.", ".query_key_value.")] = stacked.reshape(-1, *q.shape[1:])
        return hf


def bloom_names(cfg: ModelConfig) -> BloomNames:
    """The name table of this config's checkpoint (splitting the fused QKV needs the head count)."""
    return BloomNames(cfg.n_heads)


def bloom_config_from_hf(hf: dict) -> ModelConfig:
    if hf.get("apply_residual_connection_post_layernorm"):
        raise LmforgeError("BLOOM apply_residual_connection_post_layernorm=True is not supported")
    if hf.get("pretraining_tp", 1) > 1 and hf.get("slow_but_exact"):
        raise LmforgeError("BLOOM slow_but_exact=True (sliced tensor-parallel sums) is not supported")
    dim, n_heads = hf["hidden_size"], hf["n_head"]
    return ModelConfig.from_flat(
        family="bloom",
        vocab_size=hf["vocab_size"],
        dim=dim,
        n_layers=hf["n_layer"],
        n_heads=n_heads,
        ffn_dim=4 * dim,
        max_seq_len=hf.get("seq_length") or 2048,  # ALiBi has no trained length limit; BLOOM trained on 2048
        norm="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        mlp="gelu",
        mlp_bias=True,
        qkv_bias=True,
        o_bias=True,
        pos_embedding="alibi",
        embed_norm=True,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
    )


def bloom_config_to_hf(cfg: ModelConfig, dtype: torch.dtype) -> dict:
    fixed = dict(norm="layernorm", mlp="gelu", mlp_bias=True, qkv_bias=True, o_bias=True, pos_embedding="alibi",
                 embed_norm=True, norm_position="pre", causal=True, mlm_head=False, qk_norm=False, embed_scale=False,
                 sliding_window=None, logn_train_len=None, type_vocab_size=0, final_logit_softcap=None)
    flat = cfg.to_flat()
    wrong = {k: flat.get(k) for k, v in fixed.items() if flat.get(k) != v}
    if wrong or cfg.resolved_kv_heads != cfg.n_heads or cfg.ffn_dim != 4 * cfg.dim or \
            cfg.resolved_head_dim * cfg.n_heads != cfg.dim:
        raise LmforgeError(f"bloom export needs {fixed}, n_kv_heads == n_heads, ffn_dim == 4 * dim and head_dim == "
                           f"dim / n_heads; got {wrong}, ffn_dim={cfg.ffn_dim}")
    return {
        "architectures": ["BloomForCausalLM"],
        "model_type": "bloom",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "layer_norm_epsilon": cfg.norms.eps,
        "seq_length": cfg.max_seq_len,
        "apply_residual_connection_post_layernorm": False,
        "pretraining_tp": 1,
        "slow_but_exact": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
    }
