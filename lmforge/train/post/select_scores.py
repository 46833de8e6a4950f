"""Model scores of chat conversations for `lmforge data select`: a reward model's score of the last assistant answer
(InstructGPT-style RM from `lmforge rm`), and the perplexity of the assistant turns given their prompts under a
language model (the SFT loss of the row: a reference model that learned the task gives wrong, truncated or garbled
answers a high perplexity). Batched, length-sorted, with a progress callback per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from lmforge.train.post.sft_mask import tokenize_conversation
from lmforge.train.step import IGNORE_INDEX

Progress = Callable[[int], None]  # called with the number of rows scored so far


def _last_turn(messages: Sequence[dict]) -> tuple[list[dict], str]:
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return list(messages[:last]), messages[last]["content"]


@torch.no_grad()
def reward_scores(reward_model, conversations: Sequence[Sequence[dict]], batch_size: int = 32,
                  progress: Progress | None = None) -> list[float]:
    """The reward model's score of each conversation's last assistant answer given everything before it."""
    out: list[float] = []
    for start in range(0, len(conversations), batch_size):
        chunk = [_last_turn(c) for c in conversations[start:start + batch_size]]
        out += reward_model.score([p for p, _ in chunk], [a for _, a in chunk], batch_size=batch_size).tolist()
        if progress is not None:
            progress(len(out))
    return out


@torch.no_grad()
def answer_perplexities(model, tokenizer, conversations: Sequence[Sequence[dict]], max_len: int = 512,
                        batch_size: int = 16, progress: Progress | None = None) -> list[float]:
    """exp(mean NLL of the assistant tokens, end-of-turn included) of each conversation under `model`; a
    conversation whose assistant turns lie beyond max_len tokens gets inf (it ranks last)."""
    model.eval()
    device = next(model.parameters()).device
    rows = [tokenize_conversation(tokenizer, list(c), max_len) for c in conversations]
    out = [math.inf] * len(rows)
    order = sorted((i for i, r in enumerate(rows) if r is not None), key=lambda i: len(rows[i].ids))
    done = len(rows) - len(order)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(rows[i].ids) for i in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            n = len(rows[i].ids)
            ids[r, :n], labels[r, :n], mask[r, :n] = torch.tensor(rows[i].ids), torch.tensor(rows[i].labels), 1
        logits = model(ids.to(device), attention_mask=mask.to(device)).float()
        for r, i in enumerate(batch):  # one row at a time: no [B, T, V] log-softmax
            target = labels[r, 1:].to(device)
            nll = F.cross_entropy(logits[r, :-1], target, ignore_index=IGNORE_INDEX, reduction="sum")
            out[i] = math.exp(float(nll) / int((target != IGNORE_INDEX).sum()))
        done += len(batch)
        if progress is not None:
            progress(done)
    return out

