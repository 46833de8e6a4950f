"""Autoregressive generation with a KV cache for a batch of prompts, each with its own SamplingParams.

Written as small pure steps in the gpt-fast style — `prefill` the prompt, then `decode_one_token` in a loop,
the Sampler picking each next token. Prompts of different lengths are left-padded and masked, so a batch decodes
together; each sequence stops at its own stop token, stop string or length. The paged engine builds on this.
"""

from collections.abc import Iterator, Sequence

import torch

from lmforge.common.errors import LmforgeError
from lmforge.common.threads import tick as tick_threads
from lmforge.engine.request_state import RequestState, StepOutput
from lmforge.engine.sampling import Sampler, TokenHistory, make_generators
from lmforge.engine.sampling_params import SamplingParams
from lmforge.generation.cache import RollingKVCache, all_layers_sliding, new_kv_cache


def sample(logits: torch.Tensor, temperature: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids [B] from last-position logits [B, V]: argmax at temperature 0, else softmax(logits / T)."""
    from lmforge.engine.sampling import sample as sample_with_params

    return sample_with_params(logits, SamplingParams(temperature=temperature), generator)


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
    if isinstance(cache, RollingKVCache):  # no padding; positions come from the cache
        return model(ids, positions=cache.positions(ids.shape[1]), kv_cache=cache, last_only=True)[:, -1]
    return model(ids, attention_mask=mask, kv_cache=cache, last_only=True)[:, -1]


def decode_one_token(model, token: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
    """Feed one token per sequence [B] at the next position; logits [B, V]."""
    if isinstance(cache, RollingKVCache):
        return model(token[:, None], positions=cache.positions(1), kv_cache=cache)[:, -1]
    return model(token[:, None], attention_mask=mask, kv_cache=cache)[:, -1]


def fit_prompt(prompt: Sequence[int], params: SamplingParams, context: int, row: int = 0) -> list[int]:
    """The prompt, or its last tokens when `truncate` is set and prompt + max_new_tokens would overflow."""
    room = context - params.max_new_tokens
    if len(prompt) <= room:
        return list(prompt)
    if params.truncate and room >= 1:
        return list(prompt[len(prompt) - room:])
    hint = (f"pass truncate=True (--truncate) to keep its last {room} tokens" if room >= 1
            else "lower max_new_tokens")
    raise LmforgeError(f"prompt {row} has {len(prompt)} tokens; with max_new_tokens {params.max_new_tokens} that "
                       f"exceeds the model's context of {context} tokens; shorten the prompt or {hint}")


def resolve_params(n: int, params: SamplingParams | Sequence[SamplingParams] | None,
                   legacy: dict) -> list[SamplingParams]:
    """One SamplingParams per prompt; the keyword shortcuts (max_new_tokens=..., temperature=...) build one."""
    legacy = {k: v for k, v in legacy.items() if v is not None}
    if params is not None and legacy:
        raise LmforgeError(f"give either params or the keywords {sorted(legacy)}, not both")
    if params is None:
        params = SamplingParams(**legacy)
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n or not all(isinstance(p, SamplingParams) for p in params):
        raise LmforgeError(f"params must be one SamplingParams or a list of {n} (one per prompt)")
    return params


@torch.inference_mode()
def generate_stream(model, prompts: Sequence[Sequence[int]],
                    params: SamplingParams | Sequence[SamplingParams] | None = None, *, tokenizer=None,
                    pad_id: int = 0, max_new_tokens: int | None = None, temperature: float | None = None,
                    stop_token_ids: Sequence[int] | None = None,
                    seed: int | None = None) -> Iterator[list[StepOutput | None]]:
    """Yield, at each step, a StepOutput for every sequence (None for one that has already finished).

    A sequence finishes after emitting one of its stop_token_ids (which is yielded), when its text (decoded with
    `tokenizer`, needed for stop strings) contains a stop string, or after its max_new_tokens.
    """
    legacy = dict(max_new_tokens=max_new_tokens, temperature=temperature, stop_token_ids=stop_token_ids, seed=seed)
    rows = resolve_params(len(prompts), params, legacy)
    if tokenizer is None and any(p.stop for p in rows):
        raise LmforgeError("stop strings need a tokenizer to decode the output (pass tokenizer=...)")
    context = model.config.max_seq_len
    prompts = [fit_prompt(p, sp, context, i) for i, (p, sp) in enumerate(zip(prompts, rows, strict=True))]
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    B = len(prompts)
    longest = max(p.max_new_tokens for p in rows)
    if all_layers_sliding(model.config) and bool(mask.all()):  # Mistral: memory bounded by the window
        cache = RollingKVCache.for_model(model, B)
    else:
        cache = new_kv_cache(model, B, max_len=ids.shape[1] + longest)
    logits = prefill(model, ids, mask, cache)
    sampler = Sampler(rows, logits.shape[-1], device)
    generators = make_generators(rows, device)
    history = TokenHistory.from_tokens(prompts, logits.shape[-1], device) if sampler.needs_history else None
    states = [RequestState(sp, p, tokenizer) for p, sp in zip(prompts, rows, strict=True)]
    for _ in range(longest):
        tick_threads()  # fewer OpenMP threads while other processes use the CPU
        out = sampler(logits, history, generators)
        tokens = out.tokens.tolist()
        logprobs = out.logprobs.tolist() if out.logprobs is not None else [None] * B
        tops = (out.top_ids.tolist(), out.top_logprobs.tolist()) if out.top_ids is not None else None
        events: list[StepOutput | None] = []
        for row, (token, state) in enumerate(zip(tokens, states, strict=True)):
            if state.finished:
                events.append(None)
                continue
            top = list(zip(tops[0][row], tops[1][row], strict=True)) if tops is not None else None
            events.append(state.push(token, logprobs[row], top))
        done = [state.finished for state in states]
        yield events
        if all(done):
            return
        active = torch.tensor([not d for d in done], device=device)
        token = torch.where(active, out.tokens, torch.full_like(out.tokens, pad_id))
        if history is not None:
            history.append(token, active)
        mask = torch.cat([mask, active.long()[:, None]], dim=1)
        logits = decode_one_token(model, token, mask, cache)


def generate(model, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams] | None = None,
             **kwargs) -> list[list[int]]:
    """The generated token ids of each prompt (stop token included when one was produced).

    kwargs: those of generate_stream (tokenizer, pad_id, and the shortcuts max_new_tokens, temperature,
    stop_token_ids, seed).
    """
    out: list[list[int]] = [[] for _ in prompts]
    for step in generate_stream(model, prompts, params, **kwargs):
        for row, event in enumerate(step):
            if event is not None:
                out[row].append(event.token)
    return out
