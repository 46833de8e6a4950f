"""Classification heads on an lmforge Transformer, as transformers' `*ForSequenceClassification` and
`*ForTokenClassification` define them (BERT: Devlin et al., 2019; decoder heads as in GPT-1, Radford et al., 2018).

Sequence classification pools one position: an encoder its first token ([CLS]) through BERT's pooler (dense +
tanh); a decoder the last real token (it is the only one that has seen the whole text). Token classification
(named-entity recognition) scores every position. The backbone's LM head is dropped: the head reads hidden states.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lmforge.common.errors import LmforgeError

TASKS = ("sequence", "token")


def last_real_token(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B] index of each row's rightmost real token, whatever the padding side (transformers' rule: the last
    position that is not padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.bool()).argmax(-1)


class Pooler(nn.Module):
    """BERT's pooler: the first token's state through dense + tanh (trained by next-sentence prediction)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class Classifier(nn.Module):
    """backbone: an lmforge Transformer (an encoder or a decoder); task: "sequence" -> logits [B, num_labels],
    "token" -> logits [B, T, num_labels]; labels: the class names, index = class id (saved as id2label).

    Heads as transformers has them: BERT = (pooler +) dropout + `classifier` Linear with bias; decoders =
    `score` Linear, without bias for sequences (LlamaForSequenceClassification), with bias for tokens."""

    def __init__(self, backbone: nn.Module, task: str, labels: Sequence[str], dropout: float = 0.1):
        super().__init__()
        if task not in TASKS:
            raise LmforgeError(f"classification task must be one of {', '.join(TASKS)}, got {task!r}")
        labels = tuple(str(label) for label in labels)
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise LmforgeError(f"a classifier needs at least 2 distinct labels, got {list(labels)}")
        cfg = backbone.config
        for name in ("lm_head", "head_transform"):  # the LM head is not part of a classifier
            if hasattr(backbone, name):
                delattr(backbone, name)
        if cfg.heads.mlm:  # an encoder without its masked-LM head
            cfg = backbone.config = cfg.replace(mlm_head=False)
        self.backbone, self.config, self.task, self.labels = backbone, cfg, task, labels
        self.encoder = not cfg.attention.causal
        self.pooler = Pooler(cfg.dim) if task == "sequence" and self.encoder else None
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(cfg.dim, len(labels), bias=self.encoder or task == "token")
        nn.init.normal_(self.score.weight, std=cfg.init_std)
        if self.score.bias is not None:
            nn.init.zeros_(self.score.bias)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """float32 logits: [B, num_labels] (sequence) or [B, T, num_labels] (token). Without an attention mask a
        decoder takes every position that is not the pad token as real (as transformers does)."""
        positions = None
        if self.config.positions.kind == "learned":  # BERT counts positions from 0 whatever the padding
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        hidden = self.backbone.hidden_states(input_ids, attention_mask, positions, token_type_ids=token_type_ids)
        if self.task == "token":
            return self.score(self.dropout(hidden)).float()
        if self.pooler is not None:
            return self.score(self.dropout(self.pooler(hidden))).float()
        if attention_mask is None:
            pad = self.config.pad_token_id
            attention_mask = input_ids != pad if pad is not None else torch.ones_like(input_ids)
        pooled = hidden[torch.arange(len(hidden), device=hidden.device), last_real_token(attention_mask)]
        return self.score(pooled).float()
