"""Minimal autoregressive generation with a KV cache: greedy and temperature sampling.

Written as small pure steps in the gpt-fast style — `prefill` the prompt, then `decode_one_token` in a loop,
`sample` picking each next token. Prompts of different lengths are left-padded and masked, so a batch decodes
together; each sequence stops at its own stop token. The full engine (paged cache, scheduler) builds on this.
"""

from collections.abc import Iterator, Sequence

import torch

from lmforge.common.errors import LmforgeError


def sample(logits: torch.Tensor, temperature: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids [B] from last-position logits [B, V]: argmax at temperature 0, else softmax(logits / T)."""
    if temperature < 0:
        raise LmforgeError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, T], mask [B, T]) with every prompt aligned to the right."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise LmforgeError("every prompt must contain at least one token")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids, mask


def prefill(model, ids: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
    """Run the whole prompt once, filling the cache; logits of the last position [B, V]."""
    return model(ids, attention_mask=mask, kv_cache=cache, last_only=True)[:, -1]


def decode_one_token(model, token: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
    """Feed one token per sequence [B] at the next position; logits [B, V]."""
    return model(token[:, None], attention_mask=mask, kv_cache=cache)[:, -1]


@torch.inference_mode()
def generate_stream(model, prompts: Sequence[Sequence[int]], max_new_tokens: int = 128, temperature: float = 0.0,
                    stop_token_ids: Sequence[int] = (), seed: int | None = None,
                    pad_id: int = 0) -> Iterator[list[int | None]]:
    """Yield, at each step, the new token of every sequence (None for one that has already stopped).

    A sequence stops after emitting a stop token (which is yielded) or after max_new_tokens.
    """
    if max_new_tokens < 0:
        raise LmforgeError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    max_len = ids.shape[1] + max_new_tokens
    if max_len > model.config.max_seq_len:
        raise LmforgeError(f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                           f"model's context of {model.config.max_seq_len} tokens")
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    stops = torch.tensor(sorted(set(stop_token_ids)), dtype=torch.long, device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    if max_new_tokens == 0:
        return
    cache = model.new_kv_cache(len(prompts), max_len=max_len)
    logits = prefill(model, ids, mask, cache)
    for step in range(max_new_tokens):
        token = sample(logits, temperature, generator)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        yield [None if d else t for t, d in zip(token.tolist(), done.tolist(), strict=True)]
        done |= torch.isin(token, stops)
        if bool(done.all()) or step == max_new_tokens - 1:
            return
        mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
        logits = decode_one_token(model, token, mask, cache)


def generate(model, prompts: Sequence[Sequence[int]], **kwargs) -> list[list[int]]:
    """The generated token ids of each prompt (stop token included when one was produced)."""
    out: list[list[int]] = [[] for _ in prompts]
    for step in generate_stream(model, prompts, **kwargs):
        for row, token in enumerate(step):
            if token is not None:
                out[row].append(token)
    return out
