"""Prompt tuning (Lester et al., 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"): n learned
virtual-token embeddings are prepended to every input of a frozen model; only those n x dim numbers train.

The wrapper is a drop-in for the model (same call, logits for the real tokens only), so the engine's generate can
run it: virtual tokens enter once, at prefill, and then live in the KV cache like any prompt.
"""

import torch
from torch import nn

from lmforge.common.errors import ConfigError
from lmforge.generation.cache import new_kv_cache
from lmforge.peft.lora import freeze


class PromptTuning(nn.Module):
    def __init__(self, model: nn.Module, n_virtual: int, init_ids: list[int] | None = None):
        """init_ids: token ids whose embeddings start the prompt (e.g. a task description, len == n_virtual);
        by default n random vocabulary rows (the paper's sampled-vocabulary init)."""
        super().__init__()
        if n_virtual < 1:
            raise ConfigError(f"PromptTuning.n_virtual must be >= 1, got {n_virtual}")
        if init_ids is not None and len(init_ids) != n_virtual:
            raise ConfigError(f"PromptTuning init_ids has {len(init_ids)} ids, expected n_virtual={n_virtual}")
        freeze(model)
        self.model, self.n_virtual = model, n_virtual
        table = model.embed.weight
        idx = torch.tensor(init_ids) if init_ids is not None else torch.randint(0, table.shape[0], (n_virtual,))
        self.prompt = nn.Parameter(table[idx.to(table.device)].detach().clone())  # [n, dim]

    @property
    def config(self):
        return self.model.config

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None):
        return new_kv_cache(self.model, batch_size, (max_len or self.config.max_seq_len) + self.n_virtual, dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, kv_cache=None,
                last_only: bool = False) -> torch.Tensor:
        """Logits [B, T, V] for the real tokens; attention_mask [B, S] covers the real (cached + new) tokens only."""
        B, T = input_ids.shape
        n = self.n_virtual
        cached = kv_cache.length - n if kv_cache is not None and kv_cache.length else 0
        if attention_mask is None:
            attention_mask = torch.ones(B, cached + T, dtype=torch.long, device=input_ids.device)
        mask = torch.cat([attention_mask.new_ones(B, n), attention_mask], dim=1)  # virtual tokens always visible
        if kv_cache is not None and kv_cache.length:  # decoding: the virtual tokens are in the cache already
            return self.model(input_ids, attention_mask=mask, kv_cache=kv_cache, last_only=last_only)
        tokens = self.model.embed(input_ids)
        embeds = torch.cat([self.prompt.to(tokens.dtype).expand(B, n, -1), tokens], dim=1)
        logits = self.model(None, attention_mask=mask, kv_cache=kv_cache, last_only=last_only, inputs_embeds=embeds)
        return logits if last_only else logits[:, n:]
