"""A static-shape KV cache (gpt-fast): fixed tensors written at tensor positions, so that a decode step has the same
shapes and no Python-int state at every call and `torch.compile` captures it once.

Each step writes the new keys/values with `index_copy_` at `pos + arange(T)` and attends over the whole buffer
with a position mask (keys after the query are masked); `pos` is a 0-dim tensor advanced in place. It attends to
max_len keys every step, so in eager mode it is no faster than the growing KVCache: it exists for compiled steps.
Full-attention (non-MLA) models, one shared position per batch (no padding).
"""

import torch

from lmforge.common.errors import LmforgeError
from lmforge.model.attention_backend import AttentionBackend, sdpa
from lmforge.model.config_attention import layer_window


class StaticKVCache:
    kind = "static KV cache"

    def __init__(self, n_layers: int, batch_size: int, max_len: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.pos = torch.zeros((), dtype=torch.long, device=device)  # positions written (a tensor: no recompiles)
        self.max_len = max_len
        self.backend = StaticBackend(self)

    @classmethod
    def for_model(cls, model, batch_size: int, max_len: int, dtype: torch.dtype) -> "StaticKVCache":
        cfg = model.config
        if cfg.attention.kind == "mla" or any(layer_window(cfg, i) is not None for i in range(cfg.n_layers)):
            raise LmforgeError("a static KV cache needs a model with full attention on every layer and no MLA; "
                               "use the default cache for this model")
        return cls(cfg.n_layers, batch_size, max_len, cfg.resolved_kv_heads, cfg.resolved_head_dim, dtype=dtype,
                   device=model.embed.weight.device)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def length(self) -> int:
        return int(self.pos)

    def check_room(self, n_new: int) -> None:
        if self.length + n_new > self.max_len:
            raise LmforgeError(f"{self.kind} full: {self.length} cached + {n_new} new tokens exceed its max_len "
                               f"{self.max_len}")

    def reset(self) -> None:
        self.pos.zero_()

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on (entries after it are masked until overwritten)."""
        if not 0 <= length <= self.length:
            raise LmforgeError(f"cannot truncate a {self.kind} of length {self.length} to {length}")
        self.pos.fill_(length)


class StaticBackend(AttentionBackend):
    needs_mask = False  # masks by position over the whole buffer (an attention_mask is refused)

    def __init__(self, cache: StaticKVCache):
        self.cache = cache
        self.index = self.mask = None  # of the current forward pass: slots of the new tokens, [T, max_len] mask

    def begin(self, num_tokens: int) -> torch.Tensor:
        # No room check here: it would read `pos` (a sync, and a graph break when compiled); index_copy_ refuses
        # slots past the end. Callers size the cache (or call check_room) before decoding.
        cache = self.cache
        self.index = cache.pos + torch.arange(num_tokens, device=cache.pos.device)
        keys = torch.arange(cache.max_len, device=cache.pos.device)
        self.mask = keys[None, :] <= self.index[:, None]
        return cache.pos

    def end(self, num_tokens: int) -> None:
        self.cache.pos += num_tokens

    def attend(self, layer, q, k, v, mask, is_causal, scale):
        keys, values = self.cache.k[layer], self.cache.v[layer]  # [B, H_kv, max_len, D]
        keys.index_copy_(2, self.index, k.to(keys.dtype))
        values.index_copy_(2, self.index, v.to(values.dtype))
        return sdpa(q, keys, values, self.mask, False, scale)

    def attend_latent(self, layer, mla, q_nope, q_rope, latent, k_rope, mask, is_causal):
        raise LmforgeError("a static KV cache does not hold MLA latents")  # refused in for_model already
