"""The dense decoder-only Transformer (GPT-2 / Llama / Qwen family), readable top to bottom.

token ids -> embedding -> n_layers x [x + attn(norm(x)); x + mlp(norm(x))] -> norm -> lm_head -> logits.
The model knows nothing of devices, optimisers, checkpoint formats or parallelism: those adapters live outside.
"""

import math

import torch
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.model.attention import Attention
from lmforge.model.config import ModelConfig
from lmforge.model.kv_cache import KVCache
from lmforge.model.mlp import make_mlp
from lmforge.model.norms import make_norm
from lmforge.model.rope import rope_cos_sin, rope_inv_freq


class Block(nn.Module):
    """One pre-norm residual block: attention then MLP, each added back to the residual stream."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        self.mlp = make_mlp(cfg)

    def forward(self, x, cos, sin, mask, is_causal, kv_cache=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, is_causal, kv_cache)
        return x + self.mlp(self.mlp_norm(x))


def build_attention_mask(attention_mask: torch.Tensor | None, start: int, T: int, device):
    """(bool mask [B or 1, 1, T, S] or None, is_causal) for queries at positions [start, start+T).

    attention_mask is the Hugging Face-style key mask [B, S] (1 = real token, 0 = padding) covering the cached
    and the new tokens. Without padding we let SDPA use its causal fast path; a padded query row that would see
    no key at all is allowed to see itself, so padding never produces NaNs.
    """
    S = start + T
    if attention_mask is not None and attention_mask.shape[-1] != S:
        raise LmforgeError(f"attention_mask covers {attention_mask.shape[-1]} positions, expected {S} "
                           f"({start} cached + {T} new)")
    padded = attention_mask is not None and not bool(attention_mask.all())
    if not padded and (start == 0 or T == 1):
        return None, start == 0 and T > 1
    key_pos = torch.arange(S, device=device)
    query_pos = torch.arange(start, S, device=device)
    allowed = key_pos[None, :] <= query_pos[:, None]  # [T, S] causal
    if padded:
        allowed = allowed[None] & attention_mask[:, None, :].bool()  # [B, T, S]
        allowed = allowed | (key_pos[None, :] == query_pos[:, None])[None]
    else:
        allowed = allowed[None]
    return allowed[:, None], False


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = make_norm(cfg.norm, cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.tie_weights()
        self.init_weights()

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2 / Llama init: N(0, std) everywhere, residual output projections scaled by 1/sqrt(2 n_layers)."""
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scale = 1 / math.sqrt(2 * self.config.n_layers) if name.endswith(("o_proj", "down_proj")) else 1
                nn.init.normal_(module.weight, mean=0.0, std=std * scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif hasattr(module, "reset_parameters") and not list(module.children()):
                module.reset_parameters()

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        cfg = self.config
        return KVCache(cfg.n_layers, batch_size, max_len or cfg.max_seq_len, cfg.resolved_kv_heads,
                       cfg.resolved_head_dim, dtype=dtype or self.embed.weight.dtype, device=self.embed.weight.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                last_only: bool = False, logit_indices: torch.Tensor | None = None) -> torch.Tensor:
        """Float logits [B, T, V] (or [B, 1, V] with last_only) for token ids [B, T].

        attention_mask: [B, S] key mask over cached + new tokens (1 = token, 0 = padding); when given and
        positions is not, positions count only real tokens, so left padding does not shift them.
        kv_cache: new keys/values are appended to it and it advances by T. A paged cache (the serving engine's)
        takes packed tokens [1, N] of several sequences with explicit positions and does the attention itself.
        logit_indices: compute logits only at these positions of T (e.g. each packed sequence's last token).
        """
        if input_ids.dim() != 2:
            raise LmforgeError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        paged = getattr(kv_cache, "paged", False)
        if paged and positions is None:
            raise LmforgeError("a paged KV cache needs explicit positions")
        start = kv_cache.length if kv_cache is not None and not paged else 0
        if kv_cache is not None and not paged:
            kv_cache.check_room(T)
        if positions is None:
            if attention_mask is not None:
                positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, start:start + T]
            else:
                positions = torch.arange(start, start + T, device=input_ids.device).expand(B, T)
        mask, is_causal = (None, False) if paged else build_attention_mask(attention_mask, start, T, input_ids.device)
        x = self.embed(input_ids)
        # Frequencies are recomputed in float32 each call (a few dozen numbers): no buffer to lose precision
        # when the model is cast to bf16, nothing to re-create after building on the meta device.
        inv_freq = rope_inv_freq(self.config.resolved_head_dim, self.config.rope_theta).to(x.device)
        cos, sin = rope_cos_sin(positions, inv_freq, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, is_causal, kv_cache)
        if kv_cache is not None and not paged:
            kv_cache.advance(T)
        if last_only:
            x = x[:, -1:]
        elif logit_indices is not None:
            x = x[:, logit_indices]
        return self.lm_head(self.norm(x)).float()
