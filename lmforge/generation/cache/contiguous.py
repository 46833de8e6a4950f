"""Preallocated contiguous KV caches for autoregressive decoding (gpt-fast style: one tensor, written in place),
and their attention backend: write the new entries after the cached ones, attend over all of them with SDPA.

All sequences of a batch share one write offset; variable prompt lengths are handled by left padding and the
attention mask the caller passes, so the cache itself stays plain tensors. `MLACache` keeps only MLA's latent
and shared RoPE key (DeepSeek-V2, "Multi-head Latent Attention"): kv_lora_rank + qk_rope_head_dim numbers per
token and layer instead of 2 * heads * head_dim.
"""

import torch

from lmforge.common.errors import LmforgeError
from lmforge.generation.cache.static import StaticKVCache
from lmforge.model.attention_backend import AttentionBackend, sdpa


class CachePositions:
    """The bookkeeping every preallocated cache shares: how many positions are written, room left, rollback."""

    kind = "KV cache"

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.length = 0  # positions already written (the same for every layer after a forward pass)
        self.backend = ContiguousBackend(self)

    def check_room(self, n_new: int) -> None:
        if self.length + n_new > self.max_len:
            raise LmforgeError(
                f"{self.kind} full: {self.length} cached + {n_new} new tokens exceed its max_len {self.max_len}"
            )

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on (speculative decoding rolls back rejected draft tokens)."""
        if not 0 <= length <= self.length:
            raise LmforgeError(f"cannot truncate a {self.kind} of length {self.length} to {length}")
        self.length = length


class ContiguousBackend(AttentionBackend):
    """Attention over a cache with `length`, `check_room`, `advance` and `update(layer, a, b)` -> all entries so far
    (KVCache's keys/values, MLACache's latent/RoPE key, peft's prefix cache)."""

    def __init__(self, cache):
        self.cache = cache
        self.num_tokens = 0  # of the current forward pass

    def begin(self, num_tokens: int) -> int:
        self.cache.check_room(num_tokens)
        self.num_tokens = num_tokens
        return self.cache.length

    def end(self, num_tokens: int) -> None:
        self.cache.advance(num_tokens)

    def kv_buffers(self):
        cache = self.cache  # a batch-1 KVCache: its buffers (MLA's latent and peft's prefixes keep other layouts)
        return (cache.k, cache.v, cache.length) if type(cache) is KVCache and cache.k.shape[1] == 1 else None

    def attend(self, layer, q, k, v, mask, is_causal, scale):
        k, v = self.cache.update(layer, k, v)
        return sdpa(q, k, v, mask, is_causal, scale)

    def attend_latent(self, layer, mla, q_nope, q_rope, latent, k_rope, mask, is_causal):
        latent, k_rope = self.cache.update(layer, latent, k_rope)
        return mla.attention_path(decode=self.num_tokens == 1)(q_nope, q_rope, latent, k_rope, mask, is_causal)


class KVCache(CachePositions):
    def __init__(self, n_layers: int, batch_size: int, max_len: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        super().__init__(max_len)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v [B, H_kv, T, D] after the cached positions; return all keys/values so far."""
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` [B'] of the batch, in that order (beam search: each beam continues a parent)."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)


class MLACache(CachePositions):
    kind = "MLA cache"

    def __init__(self, n_layers: int, batch_size: int, max_len: int, kv_lora_rank: int, rope_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        self.latent = torch.zeros((n_layers, batch_size, max_len, kv_lora_rank), dtype=dtype, device=device)
        self.k_rope = torch.zeros((n_layers, batch_size, max_len, rope_dim), dtype=dtype, device=device)
        super().__init__(max_len)

    @property
    def batch_size(self) -> int:
        return self.latent.shape[1]

    def update(self, layer: int, latent: torch.Tensor, k_rope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write latent [B, T, r] and k_rope [B, T, d_rope] after the cached positions; return all so far."""
        end = self.length + latent.shape[1]
        self.latent[layer, :, self.length:end] = latent
        self.k_rope[layer, :, self.length:end] = k_rope
        return self.latent[layer, :, :end], self.k_rope[layer, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` [B'] of the batch, in that order (beam search)."""
        self.latent = self.latent.index_select(1, index)
        self.k_rope = self.k_rope.index_select(1, index)


def new_kv_cache(model, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None,
                 static: bool = False):
    """An empty contiguous cache shaped for `model` (keys/values, or MLA's latent), max_len positions (default: the
    model's context). A wrapper that keeps virtual tokens in the cache (peft's prompt / prefix tuning) defines
    its own `new_kv_cache`, used instead; one that only passes the cache down (the Trainer's MTPTrainingModel)
    needs its `config`. static: a StaticKVCache (fixed shapes, for torch.compile)."""
    if hasattr(model, "new_kv_cache"):
        return model.new_kv_cache(batch_size, max_len, dtype)
    cfg = model.config
    max_len = max_len or cfg.max_seq_len
    weight = model.embed.weight if hasattr(model, "embed") else next(p for p in model.parameters()
                                                                     if p.is_floating_point())
    dtype, device = dtype or weight.dtype, weight.device
    if static:
        return StaticKVCache.for_model(model, batch_size, max_len, dtype)
    if cfg.attention.kind == "mla":
        return MLACache(cfg.n_layers, batch_size, max_len, cfg.attention.kv_lora_rank, cfg.attention.qk_rope_head_dim,
                        dtype=dtype, device=device)
    return KVCache(cfg.n_layers, batch_size, max_len, cfg.resolved_kv_heads, cfg.resolved_head_dim, dtype=dtype,
                   device=device)
