"""What each layer's attention receives: RoPE cos/sin, the attention mask (with ALiBi's biases folded in: a float
mask [B, H, T, S]) and LogN query scales.

Layers differ only by their kind (full or sliding window, global or local RoPE base), so each distinct kind is
built once per forward pass and shared; a plain causal RoPE model gets exactly one set, as before.
"""

import torch

from lmforge.model.alibi import alibi_mask, alibi_slopes
from lmforge.model.attention_mask import build_attention_mask, build_window_mask
from lmforge.model.config import ModelConfig
from lmforge.model.config_attention import layer_window
from lmforge.model.positions import logn_scale
from lmforge.model.rope import rope_cos_sin
from lmforge.model.rope_scaling import scaled_inv_freq
from lmforge.model.segments import build_segment_mask


def needs_input_extras(cfg: ModelConfig) -> bool:
    emb = cfg.embeddings
    return emb.scale or emb.norm or emb.type_vocab_size > 0 or cfg.positions.kind in ("sinusoidal", "learned")


def rope_tables(cfg: ModelConfig, positions: torch.Tensor, dtype: torch.dtype, local: bool):
    """(cos, sin) [B, T, head_dim] for the global RoPE (rope_theta + rope_scaling) or the local one (Gemma3's
    sliding layers: rope_local_theta, unscaled). Frequencies are recomputed in float32 each call (a few dozen
    numbers): no buffer to lose precision in bf16, nothing to re-create after building on the meta device."""
    if local:
        inv_freq, attention_factor = scaled_inv_freq(cfg.rope_dim, cfg.positions.rope_local_theta, None,
                                                     cfg.max_seq_len)
    else:
        dynamic = (cfg.positions.rope_scaling or {}).get("rope_type") == "dynamic"
        seq_len = int(positions.max()) + 1 if dynamic and positions.numel() else None
        inv_freq, attention_factor = scaled_inv_freq(cfg.rope_dim, cfg.positions.rope_theta, cfg.positions.rope_scaling,
                                                     cfg.max_seq_len, seq_len)
    cos, sin = rope_cos_sin(positions, inv_freq.to(positions.device), dtype)
    if attention_factor != 1.0:  # YaRN's temperature, folded into cos and sin as transformers does
        cos, sin = (cos.float() * attention_factor).to(dtype), (sin.float() * attention_factor).to(dtype)
    return cos, sin


def layer_inputs(cfg: ModelConfig, attention_mask: torch.Tensor | None, positions: torch.Tensor, start: int,
                 T: int, dtype: torch.dtype, segment_ids: torch.Tensor | None = None,
                 masks: bool = True) -> list[tuple]:
    """One (cos, sin, mask, is_causal, q_scale) tuple per layer (shared objects for layers of the same kind).
    segment_ids [B, T] (packed documents) replaces the causal/window mask by its block-diagonal version.
    masks=False: the attention backend masks by itself (paged, rolling, static caches): none are built."""
    device = positions.device
    q_scale = slopes = None
    if masks and cfg.positions.kind == "alibi":
        slopes = alibi_slopes(cfg.n_heads)
    if cfg.positions.logn_train_len is not None:
        q_scale = logn_scale(positions, cfg.positions.logn_train_len)[:, None, :, None]  # [B, 1, T, 1]
    built: dict[tuple, tuple] = {}
    out = []
    for i in range(cfg.n_layers):
        window = layer_window(cfg, i)
        local = window is not None and cfg.positions.rope_local_theta is not None
        key = (window, local)
        if key not in built:
            if cfg.positions.kind != "rope":
                cos = sin = None
            elif local or not any(k[1] == local for k in built):
                cos, sin = rope_tables(cfg, positions, dtype, local)
            else:  # same RoPE as a kind already built
                cos, sin = next(v[:2] for k, v in built.items() if k[1] == local)
            if not masks:
                mask, is_causal = None, False
            elif segment_ids is not None:
                mask, is_causal = build_segment_mask(segment_ids, cfg.attention.causal, window), False
            elif cfg.attention.causal and window is None:
                mask, is_causal = build_attention_mask(attention_mask, start, T, device)
            else:
                causal = cfg.attention.causal
                mask, is_causal = build_window_mask(attention_mask, start, T, device, causal, window), False
            if slopes is not None:
                mask, is_causal = alibi_mask(slopes, mask, is_causal, positions, attention_mask, start + T,
                                             dtype), False
            built[key] = (cos, sin, mask, is_causal, q_scale)
        out.append(built[key])
    return out
