"""A completion given a prompt, as one token sequence: the chat template renders the prompt with the assistant
header, the completion is the assistant turn up to and including its end-of-turn token; a completion mask marks
the scored tokens. Batches are right-padded, and each row's sequence log-probability is summed (or averaged) over
its completion — the quantity DPO, IPO, SimPO and ORPO are written in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmforge.common.errors import LmforgeError
from lmforge.train.post.logprobs import gather_logprobs, masked_sum, target_mask

END_OF_TURN = "<|im_end|>"


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + completion; the completion starts at `start`."""

    ids: tuple[int, ...]
    start: int


@dataclass(frozen=True)
class EncodedPair:
    chosen: Encoded
    rejected: Encoded


def encode_completion(tokenizer, prompt: Sequence[dict], completion: str, max_len: int = 512) -> Encoded:
    """[prompt with the generation header] + [completion + end-of-turn]; a too long prompt loses its start.

    Ids come from the tokenizer's chat encoding, so special-token strings inside the data stay plain text; the
    completion starts where the conversation's ids leave the prompt's (the header's ids, unless a merge crosses it).
    """
    head = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": completion}])
    if not full.startswith(head):
        raise LmforgeError("the chat template renders the prompt differently with and without the answer; "
                           "cannot find where the completion starts")
    head_ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True)
    full_ids = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": completion}], tokenize=True)
    shared = min(len(head_ids), len(full_ids))
    start = next((i for i in range(shared) if head_ids[i] != full_ids[i]), shared)
    end = tokenizer.token_to_id(END_OF_TURN)
    end = end if end is not None else tokenizer.eos_token_id
    tail = full_ids[start:]
    if end is not None and end in tail:  # content cannot hold the end-of-turn id: the first one is the template's
        tail = tail[:tail.index(end) + 1]
    prompt_ids, completion_ids = full_ids[:start], tail[:max_len - 1]
    prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(completion_ids) - max_len):]
    if not prompt_ids:
        raise LmforgeError(f"max_len={max_len} leaves no room for the prompt")
    return Encoded(tuple(prompt_ids + completion_ids), len(prompt_ids))


def encode_pairs(tokenizer, pairs, max_len: int = 512) -> list[EncodedPair]:
    """Tokenize preference pairs once (objects with .prompt, .chosen, .rejected)."""
    return [EncodedPair(encode_completion(tokenizer, p.prompt, p.chosen, max_len),
                        encode_completion(tokenizer, p.prompt, p.rejected, max_len)) for p in pairs]


@dataclass
class Batch:
    """ids, attention_mask, completion_mask: [B, T] (right padding)."""

    ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor


def collate(rows: Sequence[Encoded], pad_id: int = 0) -> Batch:
    T = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    attention = torch.zeros(len(rows), T, dtype=torch.long)
    completion = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r.ids)] = torch.tensor(r.ids)
        attention[i, :len(r.ids)] = 1
        completion[i, r.start:len(r.ids)] = 1
    return Batch(ids, attention, completion)


def collate_pairs(pairs: Sequence[EncodedPair], pad_id: int = 0) -> Batch:
    """One batch of 2B rows: the B chosen sequences, then the B rejected ones (one forward pass for both)."""
    return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)


def sequence_logprobs(model, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """([B] summed completion log-prob, [B] completion token count). Right padding never reaches a real token
    under causal attention, so the model runs without a mask (its fastest path). The LM head (and its float32
    [rows x positions x vocab] logits, the largest tensors of a step) runs only from the first position any row
    scores (the end of the shortest prompt) on: no logits for the prompts' shared part."""
    mask = target_mask(batch.completion_mask)
    scored = mask.any(0).nonzero()
    first = int(scored[0]) if len(scored) else mask.shape[1] - 1
    ids = batch.ids.to(next(model.parameters()).device)  # collated on the CPU; the model may sit on a GPU
    mask = mask.to(ids.device)
    positions = torch.arange(first, mask.shape[1], device=ids.device)
    logits = model(ids, logit_indices=positions)
    logp = gather_logprobs(logits, ids[:, first + 1:])
    return masked_sum(logp, mask[:, first:]), mask.sum(-1)
