"""P-tuning v2 (Liu et al., 2021) / prefix tuning (Li & Liang, 2021): n learned keys and values per layer, which
every query of a frozen model can attend to, as if a prompt had been cached; only the prefixes train.

Training reuses the model's KV-cache path: a `PrefixCache` returns [prefix; new] keys/values (differentiable, no
in-place writes). Generation fills a real KVCache with the prefixes, so the engine runs the wrapper unchanged.
"""

import torch
from torch import nn

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.generation.cache import new_kv_cache
from lmforge.generation.cache.contiguous import ContiguousBackend
from lmforge.peft.lora import freeze


class PrefixCache:
    """Duck-types KVCache for one forward pass: layer l sees [prefix_l; its new keys/values]."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, batch_size: int):
        self.keys, self.values, self.batch_size = keys, values, batch_size  # [L, H_kv, n, D]
        self.length = keys.shape[2]
        self.backend = ContiguousBackend(self)

    def check_room(self, n_new: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass  # single use: nothing is stored

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = k.shape[0]
        pk = self.keys[layer].to(k.dtype).expand(B, -1, -1, -1)
        pv = self.values[layer].to(v.dtype).expand(B, -1, -1, -1)
        return torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)


class PrefixTuning(nn.Module):
    def __init__(self, model: nn.Module, n_prefix: int, init_std: float = 0.02):
        super().__init__()
        cfg = model.config
        if n_prefix < 1:
            raise ConfigError(f"PrefixTuning.n_prefix must be >= 1, got {n_prefix}")
        if cfg.attention.kind == "mla":
            raise LmforgeError("prefix tuning needs standard (GQA/MHA) attention; this model uses MLA")
        freeze(model)
        self.model, self.n_prefix = model, n_prefix
        shape = (cfg.n_layers, cfg.resolved_kv_heads, n_prefix, cfg.resolved_head_dim)
        device = model.embed.weight.device
        self.keys = nn.Parameter(torch.randn(shape, device=device) * init_std)
        self.values = nn.Parameter(torch.randn(shape, device=device) * init_std)

    @property
    def config(self):
        return self.model.config

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None):
        return new_kv_cache(self.model, batch_size, (max_len or self.config.max_seq_len) + self.n_prefix, dtype)

    @torch.no_grad()
    def fill(self, kv_cache) -> None:
        """Write the prefixes at the start of an empty KVCache (generation)."""
        n = self.n_prefix
        kv_cache.check_room(n)
        kv_cache.k[:, :, :, :n] = self.keys.to(kv_cache.k.dtype)[:, None]
        kv_cache.v[:, :, :, :n] = self.values.to(kv_cache.v.dtype)[:, None]
        kv_cache.advance(n)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, kv_cache=None,
                last_only: bool = False) -> torch.Tensor:
        """Logits [B, T, V]; attention_mask [B, S] covers the real (cached + new) tokens only."""
        B, T = input_ids.shape
        n = self.n_prefix
        if kv_cache is None:
            kv_cache = PrefixCache(self.keys, self.values, B)
        elif kv_cache.length == 0:
            self.fill(kv_cache)
        if attention_mask is None:
            attention_mask = torch.ones(B, kv_cache.length - n + T, dtype=torch.long, device=input_ids.device)
        mask = torch.cat([attention_mask.new_ones(B, n), attention_mask], dim=1)
        return self.model(input_ids, attention_mask=mask, kv_cache=kv_cache, last_only=last_only)
