"""Vocabulary expansion for continued pretraining: add tokens to the tokenizer and start each new token's
embedding (and untied output row) at the mean of the rows of the sub-tokens its text had under the OLD
tokenizer — the new token then begins as the average of the pieces it replaces (Gee et al., 2022; Hewitt, 2021).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.model.resize import resize_token_embeddings


def read_token_file(path: str | Path) -> list[str]:
    """One token per line (the line as written, without its newline; blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"add_tokens file not found: {path}")
    tokens = [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines()]
    tokens = [t for t in tokens if t.strip()]
    if not tokens:
        raise LmforgeError(f"add_tokens file {path} lists no tokens")
    return tokens


@torch.no_grad()
def expand_vocabulary(model, tokenizer, tokens: list[str]) -> dict[str, list[int]]:
    """Add `tokens` to `tokenizer` and grow `model` (in place); returns {new token: its old sub-token ids}.

    Tokens already in the vocabulary are skipped. The model's vocabulary grows to cover every new id (a model
    whose vocabulary is larger than the tokenizer's keeps its size; the unused rows the new ids land on are
    overwritten with the sub-token mean).
    """
    vocab = tokenizer.get_vocab()
    fresh = [t for t in dict.fromkeys(tokens) if t not in vocab]
    pieces = {t: tokenizer.encode(t, add_special_tokens=False) for t in fresh}
    for token, ids in pieces.items():
        if not ids:
            raise LmforgeError(f"token {token!r} encodes to nothing under the current tokenizer")
    tokenizer.add_tokens(fresh)
    new_ids = {t: tokenizer.token_to_id(t) for t in fresh}
    if new_ids:
        size = max(model.config.vocab_size, max(new_ids.values()) + 1)
        resize_token_embeddings(model, size)
    tables = [model.embed.weight]
    if not model.config.tie_embeddings:
        tables.append(model.lm_head.weight)
    for token, ids in pieces.items():
        index = torch.tensor(ids, device=tables[0].device)
        for table in tables:
            table[new_ids[token]] = table[index].float().mean(dim=0).to(table.dtype)
    return pieces
