"""A scalar head on a causal LM's final hidden states: the reward model (the score at the last real token,
Ouyang et al., 2022 "InstructGPT") and PPO's critic (a value per position) are both this module.
"""

from __future__ import annotations

import torch
from torch import nn


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B] index of each row's last real token (right or no padding: the count minus one; left padding: T-1)."""
    T = attention_mask.shape[1]
    positions = torch.arange(T, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), positions, -1).max(dim=1).values.clamp(min=0)


class ScalarHead(nn.Module):
    """backbone: an lmforge Transformer (its `hidden_states` is used; its LM head is not). Outputs float32."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        self.score = nn.Linear(backbone.config.dim, 1)
        nn.init.normal_(self.score.weight, std=1.0 / (backbone.config.dim + 1) ** 0.5)
        nn.init.zeros_(self.score.bias)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T] a scalar per position (ids and mask move to the head's device: batches collate on the CPU)."""
        ids = ids.to(self.score.weight.device)
        attention_mask = attention_mask.to(ids.device) if attention_mask is not None else None
        hidden = self.backbone.hidden_states(ids, attention_mask)
        return self.score(hidden).squeeze(-1).float()

    def last_token_scores(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B] the scalar at each row's last real token (a reward model's score of the whole sequence)."""
        values = self(ids, attention_mask)
        return values.gather(1, last_token_index(attention_mask.to(values.device))[:, None]).squeeze(1)
