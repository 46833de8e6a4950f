"""The T5 encoder-decoder (Raffel et al., 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer"): a bidirectional encoder reads the input once; a causal decoder writes the output, each block
attending to its own past (self-attention) and to the encoder's states (cross-attention).

T5's own choices: RMS-style LayerNorm without mean or bias, no 1/sqrt(d) on the attention scores (folded into the
initialisation), relative position bias buckets (t5_position_bias.py) computed by the first block of each stack
and shared by the others, no biases anywhere, ReLU (T5) or gated-GELU (T5 v1.1) feed-forward, one embedding shared
by encoder, decoder and (tied) LM head, decoder output scaled by dim^-0.5 when tied.
For generation, `T5DecoderCache` keeps the decoder's self-attention keys/values (grown each step) and the
cross-attention keys/values of the encoder output (projected once); the loop is lmforge.generation.seq2seq.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.model.mlp import ACTIVATIONS, GeluMLP, SwiGLU
from lmforge.model.norms import RMSNorm
from lmforge.model.t5_config import T5Config
from lmforge.model.t5_position_bias import RelativePositionBias

_ACT = {"relu": F.relu, "gelu": F.gelu, "gelu_new": ACTIVATIONS["gelu"], "silu": F.silu}


class T5DecoderCache:
    """Per decoder layer: self-attention keys/values [B, H, t, D] so far, and the cross-attention ones [B, H, S, D]."""

    def __init__(self, n_layers: int):
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.length = 0  # decoder positions written

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (finished rows dropped, beams reordered)."""
        for kv in (self.self_kv, self.cross_kv):
            for i, pair in enumerate(kv):
                if pair is not None:
                    kv[i] = (pair[0].index_select(0, index), pair[1].index_select(0, index))


class T5Attention(nn.Module):
    """Multi-head attention without biases or score scaling; position bias and masks arrive as one float mask."""

    def __init__(self, cfg: T5Config):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        inner = cfg.n_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, inner, bias=False)
        self.k_proj = nn.Linear(cfg.dim, inner, bias=False)
        self.v_proj = nn.Linear(cfg.dim, inner, bias=False)
        self.o_proj = nn.Linear(inner, cfg.dim, bias=False)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.n_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.k_proj(source)), self.heads(self.v_proj(source))

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Queries from x [B, T, dim] over keys/values [B, H, S, D]; bias [B or 1, H, T, S] added to the scores."""
        B, T, _ = x.shape
        y = F.scaled_dot_product_attention(self.heads(self.q_proj(x)), k, v, attn_mask=bias.to(x.dtype), scale=1.0)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


def make_t5_ffn(cfg: T5Config) -> nn.Module:
    """wi -> act -> wo (T5), or wo(act(wi_0 x) * wi_1 x) (T5 v1.1): the MLPs of lmforge.model.mlp."""
    cls = SwiGLU if cfg.gated else GeluMLP
    return cls(cfg.dim, cfg.ffn_dim, bias=False, act=_ACT[cfg.activation])


class T5Block(nn.Module):
    """x + self_attn(norm(x)) [+ x + cross_attn(norm(x), encoder)] + x + ffn(norm(x)): pre-norm residuals."""

    def __init__(self, cfg: T5Config, decoder: bool):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)  # T5's LayerNorm: no mean, no bias
        self.self_attn = T5Attention(cfg)
        if decoder:
            self.cross_norm = RMSNorm(cfg.dim, cfg.norm_eps)
            self.cross_attn = T5Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = make_t5_ffn(cfg)

    def forward(self, x, bias, layer: int = 0, cache: T5DecoderCache | None = None,
                encoder: torch.Tensor | None = None, cross_bias: torch.Tensor | None = None):
        h = self.attn_norm(x)
        k, v = self.self_attn.project_kv(h)
        if cache is not None:
            past = cache.self_kv[layer]
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            cache.self_kv[layer] = (k, v)
        x = x + self.self_attn(h, k, v, bias)
        if hasattr(self, "cross_attn"):
            kv = cache.cross_kv[layer] if cache is not None else None
            if kv is None:  # the encoder output projected once per generation
                kv = self.cross_attn.project_kv(encoder)
                if cache is not None:
                    cache.cross_kv[layer] = kv
            x = x + self.cross_attn(self.cross_norm(x), *kv, cross_bias)
        return x + self.mlp(self.mlp_norm(x))


def padding_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, 1, S] additive mask: 0 for real keys, -inf for padding (a [1, 1, 1, 1] zero without a mask)."""
    if mask is None:
        return torch.zeros(1, 1, 1, 1, dtype=dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask.bool(), float("-inf"))[
        :, None, None, :]


class T5Model(nn.Module):
    """T5ForConditionalGeneration: `encode` once, then `decode` (teacher-forced, or step by step on a cache)."""

    is_encoder_decoder = True

    def __init__(self, cfg: T5Config):
        super().__init__()
        self.config = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.encoder_bias = RelativePositionBias(cfg.num_buckets, cfg.max_distance, cfg.n_heads, bidirectional=True)
        self.encoder = nn.ModuleList(T5Block(cfg, decoder=False) for _ in range(cfg.n_layers))
        self.encoder_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.decoder_bias = RelativePositionBias(cfg.num_buckets, cfg.max_distance, cfg.n_heads, bidirectional=False)
        self.decoder = nn.ModuleList(T5Block(cfg, decoder=True) for _ in range(cfg.n_decoder_layers))
        self.decoder_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.tie_weights()

    @property
    def embed(self) -> nn.Embedding:  # what the loaders and generation read the dtype and device from
        return self.shared

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.shared.weight

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder states [B, S, dim] for input ids [B, S] (attention_mask [B, S]: 1 = token, 0 = padding)."""
        if input_ids.dim() != 2:
            raise LmforgeError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        x = self.shared(input_ids)
        S = input_ids.shape[1]
        bias = self.encoder_bias(S, S) + padding_bias(attention_mask, x.dtype).to(x.device)
        for block in self.encoder:
            x = block(x, bias)
        return self.encoder_norm(x)

    def decode(self, decoder_ids: torch.Tensor, encoder_states: torch.Tensor,
               encoder_mask: torch.Tensor | None = None, cache: T5DecoderCache | None = None) -> torch.Tensor:
        """Float logits [B, T, V] for decoder ids [B, T] placed after what `cache` holds (all of them without one)."""
        x = self.shared(decoder_ids)
        T = decoder_ids.shape[1]
        start = cache.length if cache is not None else 0
        bias = self.decoder_bias(T, start + T, start)
        causal = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
        bias = bias.masked_fill(~causal, float("-inf"))
        cross = padding_bias(encoder_mask, x.dtype).to(x.device)
        for i, block in enumerate(self.decoder):
            x = block(x, bias, i, cache, encoder_states, cross)
        if cache is not None:
            cache.length += T
        x = self.decoder_norm(x)
        if self.config.scale_decoder_outputs:
            x = x * self.config.dim ** -0.5
        return self.lm_head(x).float()

    def new_cache(self) -> T5DecoderCache:
        return T5DecoderCache(self.config.n_decoder_layers)

    def forward(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits [B, T, V]: encode input_ids, decode decoder_input_ids (start token first)."""
        return self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)
