"""Logits transforms for sampling, each a pure function on logits [B, V] with one parameter per row.

Temperature, top-k, top-p (nucleus sampling, Holtzman et al. 2019), min-p (Nguyen et al. 2024) and the CTRL
repetition penalty (Keskar et al. 2019) follow transformers' LogitsWarper/Processor definitions; presence and
frequency penalties and logit_bias follow the OpenAI API. Parameters are tensors [B, 1] (or plain floats).
`apply_token_mask` is constrained decoding's per-row mask (generation/grammar.py computes it).
"""

import torch

NEG_INF = float("-inf")


def apply_temperature(logits: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """logits / T (rows with T = 0 are greedy: pass T = 1 for them, argmax is unchanged by the later steps)."""
    return logits / temperature


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor | int) -> torch.Tensor:
    """Keep each row's k largest logits (ties with the k-th kept too); k = 0 keeps everything."""
    vocab = logits.shape[-1]
    if isinstance(top_k, int):
        if top_k <= 0 or top_k >= vocab:
            return logits
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        return logits.masked_fill(logits < kth, NEG_INF)
    k = torch.where(top_k <= 0, vocab, top_k).clamp(max=vocab).long()  # [B, 1]
    top = torch.topk(logits, int(k.max()), dim=-1).values
    kth = top.gather(-1, k - 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor | float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches p (the crossing token kept).

    Computed as transformers does: sort ascending and drop tokens whose cumulative mass is <= 1 - p, so the
    two agree to the last token. The most likely token always stays.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[:, -1] = False
    if isinstance(top_p, torch.Tensor):
        drop_sorted &= top_p < 1.0  # rows with p = 1 are untouched
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor | float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the row's largest probability."""
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, NEG_INF)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor | float) -> torch.Tensor:
    """CTRL penalty on tokens already in the prompt or the output (seen [B, V] bool): positive logits are
    divided by the penalty, negative ones multiplied, so the token always becomes less likely for penalty > 1."""
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def apply_presence_frequency(logits: torch.Tensor, counts: torch.Tensor, presence: torch.Tensor | float,
                             frequency: torch.Tensor | float) -> torch.Tensor:
    """OpenAI: logit[j] -= counts[j] * frequency_penalty + (counts[j] > 0) * presence_penalty,
    counts [B, V] being how often each token was generated so far (prompt tokens do not count)."""
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence


def apply_logit_bias(logits: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """OpenAI logit_bias: a dense [B, V] tensor of additive biases (0 where none was given)."""
    return logits + bias


def apply_token_mask(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Constrained decoding: tokens outside each row's `allowed` [B, V] bool mask get -inf (never drawn)."""
    return logits.masked_fill(~allowed, NEG_INF)
