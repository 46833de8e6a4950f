"""Log-likelihood of continuations given contexts, batched, each distinct context run once (a prefix KV cache).

What lm-evaluation-harness asks of a model (`loglikelihood`, `loglikelihood_rolling`: Gao et al., "A framework for
few-shot language model evaluation") and what an OpenAI `/v1/completions` request with `echo` + `logprobs` returns:
log P(token | everything before it) for every continuation token, whether each token was the argmax, and optionally
the top-k alternatives. A multiple-choice item asks for the same context with k continuations: the contexts of a batch
are prefilled once (left-padded, masked) into a contiguous KV cache, the cache rows are repeated per continuation and
the continuations run on top of it. Four choices cost one context pass instead of four.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmforge.common.errors import LmforgeError
from lmforge.generation.cache import new_kv_cache
from lmforge.generation.step import model_step


@dataclass
class ContinuationScore:
    """Per continuation token: log-probability, was it the argmax, and the top-k (token id, logprob) when asked."""

    logprobs: list[float] = field(default_factory=list)
    greedy: list[bool] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)

    @property
    def total(self) -> float:
        return float(sum(self.logprobs))

    @property
    def is_greedy(self) -> bool:
        return all(self.greedy)


def fit_context(context: list[int], continuation: list[int], max_len: int) -> list[int]:
    """The context, left-truncated so that context + continuation[:-1] (the model's input) fits max_len tokens, as
    lm-evaluation-harness truncates; at least one context token is kept."""
    if not continuation:
        raise LmforgeError("a continuation to score must have at least one token")
    if not context:
        raise LmforgeError("a context must have at least one token (lm-eval passes the BOS/EOS token when empty)")
    if len(continuation) > max_len:
        raise LmforgeError(f"a continuation of {len(continuation)} tokens does not fit the model's context of "
                           f"{max_len} tokens")
    keep = max(1, max_len + 1 - len(continuation))
    return list(context[-keep:])


def _batches(groups: list[tuple[tuple[int, ...], list[int]]], conts: list[list[int]], max_batch_tokens: int):
    """Consecutive groups (sorted longest context first) whose padded cache rows fit the token budget."""
    batch, width, rows = [], 0, 0
    for ctx, members in groups:
        w = max(width, len(ctx) + max(len(conts[i]) for i in members))
        r = rows + len(members)
        if batch and w * r > max_batch_tokens:
            yield batch
            batch, w, r = [], len(ctx) + max(len(conts[i]) for i in members), len(members)
        batch.append((ctx, members))
        width, rows = w, r
    if batch:
        yield batch


@torch.inference_mode()
def score_continuations(model, requests: list[tuple[list[int], list[int]]], top_k: int = 0,
                        max_batch_tokens: int = 2048, pad_id: int = 0,
                        max_len: int | None = None) -> list[ContinuationScore]:
    """Score each (context ids, continuation ids) pair; results in request order.

    `model` is an lmforge Transformer (prepared for inference or not). Contexts longer than max_len (default: the
    model's context) are left-truncated (`fit_context`). max_batch_tokens bounds rows x padded width of one batch
    (memory: the KV cache and the continuation logits scale with it)."""
    max_len = min(max_len or model.config.max_seq_len, model.config.max_seq_len)
    contexts = [fit_context(list(c), list(k), max_len) for c, k in requests]
    conts = [list(k) for _, k in requests]
    by_context: dict[tuple[int, ...], list[int]] = {}
    for i, ctx in enumerate(contexts):
        by_context.setdefault(tuple(ctx), []).append(i)
    groups = sorted(by_context.items(), key=lambda g: (-len(g[0]), g[0]))
    results: list[ContinuationScore | None] = [None] * len(requests)
    for batch in _batches(groups, conts, max_batch_tokens):
        for i, score in _score_batch(model, batch, conts, top_k, pad_id):
            results[i] = score
    return results


def _pick(logprobs: torch.Tensor, tokens: torch.Tensor, top_k: int):
    """Rows of log-probabilities [N, V] and the tokens that came [N]: (logprob [N], greedy [N], top or None)."""
    chosen = logprobs.gather(-1, tokens[:, None])[:, 0]
    greedy = logprobs.argmax(-1) == tokens
    top = torch.topk(logprobs, top_k, dim=-1) if top_k else None
    return chosen, greedy, top


def _score_batch(model, batch, conts: list[list[int]], top_k: int, pad_id: int):
    device = model.embed.weight.device
    ctxs = [list(ctx) for ctx, _ in batch]
    width = max(map(len, ctxs))
    ids = torch.tensor([[pad_id] * (width - len(c)) + c for c in ctxs], device=device)
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in ctxs], device=device)
    rows = [(g, i) for g, (_, members) in enumerate(batch) for i in members]
    longest = max(len(conts[i]) for _, i in rows)
    cache = new_kv_cache(model, len(batch), width + longest - 1)
    # the last context position predicts every continuation's first token
    last = torch.log_softmax(model_step(model, ids, cache, mask=mask if mask.min() == 0 else None).float(), -1)
    firsts = torch.tensor([conts[i][0] for _, i in rows], device=device)
    row_group = torch.tensor([g for g, _ in rows], device=device)
    first = _pick(last[row_group], firsts, top_k)
    rest = None
    if longest > 1:  # the continuations' other tokens: each row continues its context's cache row
        cache.reorder(row_group)
        inputs = [conts[i][:-1] + [pad_id] * (longest - len(conts[i])) for _, i in rows]
        full_mask = torch.cat([mask[row_group], torch.ones(len(rows), longest - 1, dtype=mask.dtype,
                                                            device=device)], dim=1)
        logits = model_step(model, torch.tensor(inputs, device=device), cache, mask=full_mask,
                            logits_at=torch.arange(longest - 1, device=device))  # every position's logits
        targets = torch.tensor([conts[i][1:] + [pad_id] * (longest - len(conts[i])) for _, i in rows],
                               device=device)
        logits = logits.float()
        logits -= logits.logsumexp(-1, keepdim=True)  # log-softmax in place: these rows are the largest tensor
        rest = _pick(logits.flatten(0, 1), targets.flatten(), top_k)
    for r, (_, i) in enumerate(rows):
        n = len(conts[i])
        lps, greedy = [first[0][r].item()], [bool(first[1][r])]
        tops = [_top_row(first[2], r)] if top_k else []
        if n > 1:
            span = slice(r * (longest - 1), r * (longest - 1) + n - 1)
            lps += rest[0][span].tolist()
            greedy += rest[1][span].tolist()
            if top_k:
                tops += [_top_row(rest[2], j) for j in range(span.start, span.stop)]
        yield i, ContinuationScore(lps, greedy, tops)


def _top_row(top, row: int) -> list[tuple[int, float]]:
    return list(zip(top.indices[row].tolist(), top.values[row].tolist(), strict=True))
