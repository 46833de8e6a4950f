"""A rolling-buffer KV cache for sliding-window attention (Mistral 7B, Jiang et al. 2023): position p lives in
slot p mod W, so memory stays at the window W however long the generation runs.

Its backend masks by the position each slot holds, so the model is given explicit positions (`positions(T)`).
Valid for models whose every layer is sliding, and for batches without padding (one shared position).
"""

import torch

from lmforge.common.errors import LmforgeError
from lmforge.model.attention_backend import AttentionBackend, sdpa
from lmforge.model.config_attention import layer_window


def all_layers_sliding(cfg) -> bool:
    """True when every layer attends to a sliding window of the same size (a rolling buffer then suffices)."""
    windows = {layer_window(cfg, i) for i in range(cfg.n_layers)}
    return cfg.attention.kind != "mla" and len(windows) == 1 and None not in windows


class RollingKVCache:
    def __init__(self, n_layers: int, batch_size: int, window: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (n_layers, batch_size, n_kv_heads, window, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.slot_pos = torch.full((window,), -1, dtype=torch.long, device=device)  # -1: empty slot
        self.window = window
        self.n_layers = n_layers
        self.length = 0  # tokens seen so far (the position of the next one)
        self.backend = RollingBackend(self)

    @classmethod
    def for_model(cls, model, batch_size: int) -> "RollingKVCache":
        cfg = model.config
        if not all_layers_sliding(cfg):
            raise LmforgeError("a rolling KV cache needs a model whose every layer uses the same sliding window")
        weight = model.embed.weight
        return cls(cfg.n_layers, batch_size, cfg.attention.sliding_window, cfg.resolved_kv_heads, cfg.resolved_head_dim,
                   dtype=weight.dtype, device=weight.device)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def positions(self, T: int) -> torch.Tensor:
        """Positions [B, T] of the next T tokens (what the model must be given with this cache)."""
        pos = torch.arange(self.length, self.length + T, device=self.slot_pos.device)
        return pos.expand(self.batch_size, T)

    def reset(self) -> None:
        self.slot_pos.fill_(-1)
        self.length = 0


class RollingBackend(AttentionBackend):
    explicit_positions = True
    needs_mask = False  # masks by the position each slot holds

    def __init__(self, cache: RollingKVCache):
        self.cache = cache

    def attend(self, layer, q, k, v, mask, is_causal, scale):
        """Attention of new queries q [B, Hq, T, D] over the cached window and the new k/v [B, H, T, D]; then the
        new keys overwrite the oldest slots."""
        c, T = self.cache, q.shape[2]
        new_pos = torch.arange(c.length, c.length + T, device=q.device)
        keys = torch.cat([c.k[layer], k], dim=2)
        values = torch.cat([c.v[layer], v], dim=2)
        key_pos = torch.cat([c.slot_pos, new_pos])
        rel = new_pos[:, None] - key_pos[None, :]  # [T, W + T]
        allowed = (key_pos[None, :] >= 0) & (rel >= 0) & (rel < c.window)
        y = sdpa(q, keys, values, allowed[None, None], False, scale)
        keep = min(T, c.window)  # only the last W new tokens can ever be seen again
        slots = new_pos[T - keep:] % c.window
        c.k[layer][:, :, slots] = k[:, :, T - keep:]
        c.v[layer][:, :, slots] = v[:, :, T - keep:]
        return y

    def attend_latent(self, layer, mla, q_nope, q_rope, latent, k_rope, mask, is_causal):
        raise LmforgeError("a rolling KV cache does not hold MLA latents")  # refused in for_model already

    def end(self, num_tokens: int) -> None:
        """The slots the new tokens took now hold their positions; the cache advances."""
        c = self.cache
        new_pos = torch.arange(c.length, c.length + num_tokens, device=c.slot_pos.device)
        keep = min(num_tokens, c.window)
        c.slot_pos[new_pos[num_tokens - keep:] % c.window] = new_pos[num_tokens - keep:]
        c.length += num_tokens
