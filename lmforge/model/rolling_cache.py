"""A rolling-buffer KV cache for sliding-window attention (Mistral 7B, Jiang et al. 2023): position p lives in
slot p mod W, so memory stays at the window W however long the generation runs.

It does its own attention (the paged-cache protocol: `paged = True`, `attend`), masking by the position each slot
holds. Valid for models whose every layer is sliding, and for batches without padding (one shared position).
"""

import torch
import torch.nn.functional as F

from lmforge.common.errors import LmforgeError
from lmforge.model.config_attention import layer_window


def all_layers_sliding(cfg) -> bool:
    """True when every layer attends to a sliding window of the same size (a rolling buffer then suffices)."""
    windows = {layer_window(cfg, i) for i in range(cfg.n_layers)}
    return cfg.attention.kind != "mla" and len(windows) == 1 and None not in windows


class RollingKVCache:
    paged = True  # the model hands attention to `attend` and passes explicit positions

    def __init__(self, n_layers: int, batch_size: int, window: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (n_layers, batch_size, n_kv_heads, window, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.slot_pos = torch.full((window,), -1, dtype=torch.long, device=device)  # -1: empty slot
        self.window = window
        self.n_layers = n_layers
        self.length = 0  # tokens seen so far (the position of the next one)

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

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               scale: float | None = None) -> torch.Tensor:
        """Attention of new queries q [B, Hq, T, D] over the cached window and the new k/v [B, H, T, D]; then the
        new keys overwrite the oldest slots. After the last layer the cache advances by T."""
        T = q.shape[2]
        new_pos = torch.arange(self.length, self.length + T, device=q.device)
        keys = torch.cat([self.k[layer], k], dim=2)
        values = torch.cat([self.v[layer], v], dim=2)
        key_pos = torch.cat([self.slot_pos, new_pos])
        rel = new_pos[:, None] - key_pos[None, :]  # [T, W + T]
        mask = (key_pos[None, :] >= 0) & (rel >= 0) & (rel < self.window)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask[None, None], scale=scale,
                                           enable_gqa=q.shape[1] != k.shape[1])
        keep = min(T, self.window)  # only the last W new tokens can ever be seen again
        slots = new_pos[T - keep:] % self.window
        self.k[layer][:, :, slots] = k[:, :, T - keep:]
        self.v[layer][:, :, slots] = v[:, :, T - keep:]
        if layer == self.n_layers - 1:
            self.slot_pos[slots] = new_pos[T - keep:]
            self.length += T
        return y

    def reset(self) -> None:
        self.slot_pos.fill_(-1)
        self.length = 0
