"""Encoder-only pieces (Devlin et al., 2019, "BERT"): the summed input embeddings and the masked-LM head transform.

An encoder is the same Transformer with `causal=False`, `norm_position="post"`, learned positions, token-type
embeddings and an embedding LayerNorm; its logits come from dense -> activation -> LayerNorm -> decoder (+ bias).
"""

import math

import torch
from torch import nn

from lmforge.model.config import ModelConfig
from lmforge.model.mlp import ACTIVATIONS
from lmforge.model.norms import make_norm
from lmforge.model.positions import sinusoidal_embedding


class MLMTransform(nn.Module):
    """BERT's `cls.predictions.transform`: dense (with bias), the MLP's activation, then a norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.dim, cfg.dim, bias=True)
        self.act = ACTIVATIONS[cfg.ffn.kind]
        self.norm = make_norm(cfg.norms.kind, cfg.dim, cfg.norms.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))


class InputExtras(nn.Module):
    """What is added to the token embeddings before the first block: sqrt(dim) scaling (Gemma), absolute
    positions (sinusoidal or learned), token-type embeddings and an embedding norm (BERT)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.pos_embed = nn.Embedding(cfg.max_seq_len, cfg.dim) if cfg.positions.kind == "learned" else None
        n_types = cfg.embeddings.type_vocab_size
        self.type_embed = nn.Embedding(n_types, cfg.dim) if n_types else None
        self.norm = make_norm(cfg.norms.kind, cfg.dim, cfg.norms.eps) if cfg.embeddings.norm else None

    def forward(self, x: torch.Tensor, positions: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        if self.cfg.embeddings.scale:  # Gemma rounds sqrt(dim) to the weights' dtype first
            x = x * torch.tensor(math.sqrt(self.cfg.dim), dtype=x.dtype)
        if self.type_embed is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(positions)
            x = x + self.type_embed(types)
        if self.pos_embed is not None:
            x = x + self.pos_embed(positions)
        elif self.cfg.positions.kind == "sinusoidal":
            x = x + sinusoidal_embedding(positions, self.cfg.dim, x.dtype)
        return self.norm(x) if self.norm is not None else x
