"""Perplexity of a causal LM on held-out text with the sliding-window (strided) method of the Hugging Face
doc "Perplexity of fixed-length models": windows of `seq_len` tokens advance by `stride`; each window scores
only the tokens not scored by the previous one, so every token after the first is scored exactly once, with
at least seq_len - stride tokens of context (all earlier tokens in the first window).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import LmforgeError

IGNORE_INDEX = -100


def windows(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window over n_tokens tokens (the doc's loop)."""
    if seq_len < 2 or not 1 <= stride <= seq_len:
        raise LmforgeError(f"need seq_len >= 2 and 1 <= stride <= seq_len, got seq_len={seq_len}, stride={stride}")
    out, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + seq_len, n_tokens)
        out.append((begin, end, max(prev_end, begin + 1)))  # position `begin` has no context in its window
        prev_end = end
        if end == n_tokens:
            break
    return out


@torch.no_grad()
def sliding_window_nll(model: nn.Module, ids: list[int] | torch.Tensor, seq_len: int, stride: int,
                       batch_size: int = 1) -> tuple[float, int]:
    """(sum of next-token negative log-likelihoods in nats, number of scored tokens) over `ids`.

    Windows are batched `batch_size` at a time; a short last window is right-padded, which a causal model
    never attends to, and its padding is not scored.
    """
    if batch_size < 1:
        raise LmforgeError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if ids.numel() < 2:
        raise LmforgeError(f"the text holds {ids.numel()} token(s); perplexity needs at least 2")
    spans = windows(ids.numel(), seq_len, stride)
    width = max(end - begin for begin, end, _ in spans)
    total, count = 0.0, 0
    for i in range(0, len(spans), batch_size):
        chunk = spans[i:i + batch_size]
        inputs = torch.zeros(len(chunk), width, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for row, (begin, end, first) in enumerate(chunk):
            inputs[row, :end - begin] = ids[begin:end]
            # the logits at position p predict token p + 1: label position p with the token at p + 1
            labels[row, first - begin - 1:end - begin - 1] = ids[first:end]
        logits = model(inputs.to(device)).float()
        total += float(F.cross_entropy(logits.flatten(0, 1), labels.to(device).flatten(),
                                       ignore_index=IGNORE_INDEX, reduction="sum"))
        count += int((labels != IGNORE_INDEX).sum())
    return total, count


def perplexity(model: nn.Module, tokenizer, text: str, seq_len: int = 1024, stride: int = 512,
               batch_size: int = 1) -> dict:
    """{nats_per_token, perplexity, tokens, bits_per_byte, ...} of `text` (encoded with the tokenizer's usual
    special tokens, as `tokenizer(text)` does in the Hugging Face doc)."""
    if not text.strip():
        raise LmforgeError("the evaluation text is empty")
    ids = tokenizer.encode(text)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    nll, count = sliding_window_nll(model, ids, seq_len, stride, batch_size)
    seconds = time.perf_counter() - t0
    model.train(was_training)
    nats = nll / count
    return {"nats_per_token": nats, "perplexity": math.exp(nats), "tokens": count, "text_tokens": len(ids),
            "bits_per_byte": nll / math.log(2) / len(text.encode()), "seq_len": seq_len, "stride": stride,
            "method": "sliding window (each token scored once, >= seq_len - stride tokens of context)",
            "seconds": seconds}
