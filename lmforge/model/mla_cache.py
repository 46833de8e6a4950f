"""The MLA cache (DeepSeek-V2, "Multi-head Latent Attention"): only the latent c_kv and the shared RoPE key.

Per token and layer it holds kv_lora_rank + qk_rope_head_dim numbers instead of 2 * heads * head_dim, which is
the point of MLA. Same interface as KVCache (length, check_room, update, advance, reset), so generation is unchanged.
"""

import torch

from lmforge.model.kv_cache import CachePositions


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
