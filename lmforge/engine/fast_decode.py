"""Fast single-sequence decoding in the gpt-fast style: a static KV cache and two small pure steps.

One sequence needs no padding mask and no position bookkeeping (its positions are the cache offsets), so a step
is the model's own readable forward on one token and nothing around it: no mask concatenation, no cumsum of
positions, no per-step allocation of the cache. Quantized models (lmforge.quant.int_linear) take the same path.
compile=True decodes on a static-shape cache (generation/cache/static.py) through a torch.compile'd step, captured
once; off by default, as it measured slower than the prepared eager path (docs/inference.md).
"""

import functools
from collections.abc import Iterator, Sequence

import torch

from lmforge.common.errors import LmforgeError
from lmforge.common.threads import tick as tick_threads
from lmforge.engine.generate import sample
from lmforge.generation.cache import new_kv_cache


def prefill(model, ids: torch.Tensor, cache) -> torch.Tensor:
    """Run the prompt [1, T] once, filling the cache; logits of its last position [1, V]."""
    return model(ids, kv_cache=cache, last_only=True)[:, -1]


def decode_one_token(model, token: torch.Tensor, cache) -> torch.Tensor:
    """Feed one token [1] at the next cache position; logits [1, V]."""
    return model(token[:, None], kv_cache=cache)[:, -1]


@functools.cache
def compiled_decode_one_token():
    """decode_one_token through torch.compile (one wrapper per process; graphs are kept per model and cache shape)."""
    return torch.compile(decode_one_token, fullgraph=True)


@torch.inference_mode()
def decode_stream(model, prompt: Sequence[int], max_new_tokens: int = 128, temperature: float = 0.0,
                  stop_token_ids: Sequence[int] = (), seed: int | None = None, step=None,
                  compile: bool = False) -> Iterator[int]:
    """Yield new token ids one by one; stops after a stop token (yielded) or max_new_tokens.

    `step(token, cache) -> logits` replaces decode_one_token when given. compile: a static cache and the compiled
    decode_one_token (the first call per model compiles, for seconds to minutes).
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
    if compile and step is None:
        step = functools.partial(compiled_decode_one_token(), model)
    step = step or (lambda token, cache: decode_one_token(model, token, cache))
    device = model.embed.weight.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    stops = set(stop_token_ids)
    cache = new_kv_cache(model, 1, max_len=max_len, static=compile)
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
