"""Fast single-sequence decoding in the gpt-fast style: a static KV cache and two small pure steps.

One sequence needs no padding mask and no position bookkeeping (its positions are the cache offsets), so a step
is the model's own readable forward on one token and nothing around it: no mask concatenation, no cumsum of
positions, no per-step allocation of the cache. Quantized models (lmforge.quant.int_linear) take the same path.
torch.compile is not used: measured on 2 CPU cores it recompiled per layer (the cache offset is a Python int)
and ran slower than eager; `step` lets a caller plug in a compiled step anyway.
"""

from collections.abc import Iterator, Sequence

import torch

from lmforge.common.errors import LmforgeError
from lmforge.common.threads import tick as tick_threads
from lmforge.engine.generate import sample


def prefill(model, ids: torch.Tensor, cache) -> torch.Tensor:
    """Run the prompt [1, T] once, filling the cache; logits of its last position [1, V]."""
    return model(ids, kv_cache=cache, last_only=True)[:, -1]


def decode_one_token(model, token: torch.Tensor, cache) -> torch.Tensor:
    """Feed one token [1] at the next cache position; logits [1, V]."""
    return model(token[:, None], kv_cache=cache)[:, -1]


@torch.inference_mode()
def decode_stream(model, prompt: Sequence[int], max_new_tokens: int = 128, temperature: float = 0.0,
                  stop_token_ids: Sequence[int] = (), seed: int | None = None, step=None) -> Iterator[int]:
    """Yield new token ids one by one; stops after a stop token (yielded) or max_new_tokens.

    `step(token, cache) -> logits` replaces decode_one_token when given (e.g. a compiled version).
    """
    if not prompt:
        raise LmforgeError("the prompt must contain at least one token")
    if max_new_tokens < 0:
        raise LmforgeError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    max_len = len(prompt) + max_new_tokens
    if max_len > model.config.max_seq_len:
        raise LmforgeError(f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                           f"model's context of {model.config.max_seq_len} tokens")
    if max_new_tokens == 0:
        return
    step = step or (lambda token, cache: decode_one_token(model, token, cache))
    device = model.embed.weight.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    stops = set(stop_token_ids)
    cache = model.new_kv_cache(1, max_len=max_len)
    logits = prefill(model, torch.tensor([list(prompt)], device=device), cache)
    for i in range(max_new_tokens):
        tick_threads()  # fewer OpenMP threads while other processes use the CPU
        token = sample(logits, temperature, generator)
        value = token.item()
        yield value
        if value in stops or i == max_new_tokens - 1:
            return
        logits = step(token, cache)


def decode(model, prompt: Sequence[int], max_new_tokens: int = 128, **kwargs) -> list[int]:
    """All new token ids of one prompt (the stop token included when one was produced)."""
    return list(decode_stream(model, prompt, max_new_tokens, **kwargs))
