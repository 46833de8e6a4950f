"""The one decode loop: autoregressive generation with a KV cache for a batch of prompts, each with its own
SamplingParams (gpt-fast's shape: `prefill`, then `decode_step` in a loop, step.py; the Sampler picks each token).

Prompts of different lengths are left-padded and masked, so a batch decodes together; each sequence stops at its
own stop token, stop string or length. With no padding (one prompt, or prompts of one length) no mask is passed
at all, so batch 1 runs the model's plain forward on one token per step: `decode` is that single-sequence fast path.
"""

import functools
from collections.abc import Iterator, Sequence

import torch

from lmforge.common.errors import LmforgeError
from lmforge.common.threads import tick as tick_threads
from lmforge.generation.cache import RollingKVCache, all_layers_sliding, new_kv_cache
from lmforge.generation.grammar import token_masks
from lmforge.generation.images import PromptImages, prompt_embeddings
from lmforge.generation.request_state import RequestState, StepOutput
from lmforge.generation.sampling import Sampler, TokenHistory, make_generators
from lmforge.generation.sampling_params import SamplingParams
from lmforge.generation.step import compiled_decode_step, decode_step, prefill


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
                    stop_token_ids: Sequence[int] | None = None, seed: int | None = None,
                    step=None, compile: bool = False,
                    images: Sequence[PromptImages | None] | None = None) -> Iterator[list[StepOutput | None]]:
    """Yield, at each step, a StepOutput for every sequence (None for one that has already finished).

    A sequence finishes after emitting one of its stop_token_ids (which is yielded), when its text (decoded with
    `tokenizer`, needed for stop strings) contains a stop string, or after its max_new_tokens.
    `step(tokens [B], cache, mask) -> logits [B, V]` replaces decode_step when given.
    compile: decode on a static-shape cache (generation/cache/static.py) through decode_step compiled with
    torch.compile, captured once (the first call per model compiles, for seconds to minutes); prompts of one
    length, full-attention non-MLA models. Off by default: it measured slower than prepared eager (docs/inference.md).
    images: per prompt, its encoded images (generation/images.py) or None: the prefill runs on embeddings with the
    visual tokens in the image slots, decoding goes on as text.
    """
    if getattr(model, "is_encoder_decoder", False):
        raise LmforgeError(f"{model.config.family} is an encoder-decoder: generate with lmforge.generation.seq2seq "
                           "(`lmforge generate` does so), not the decoder-only loop")
    legacy = dict(max_new_tokens=max_new_tokens, temperature=temperature, stop_token_ids=stop_token_ids, seed=seed)
    rows = resolve_params(len(prompts), params, legacy)
    if tokenizer is None and any(p.stop for p in rows):
        raise LmforgeError("stop strings need a tokenizer to decode the output (pass tokenizer=...)")
    context = model.config.max_seq_len
    fitted = [fit_prompt(p, sp, context, i) for i, (p, sp) in enumerate(zip(prompts, rows, strict=True))]
    images = check_images(images, prompts, fitted, compile)
    prompts = fitted
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    B = len(prompts)
    longest = max(p.max_new_tokens for p in rows)
    padded = not bool(mask.all())
    if compile:  # fixed shapes, position as a tensor: the compiled step is captured once
        if padded:
            raise LmforgeError("compile=True decodes prompts of one length (the static KV cache takes no padding "
                               f"mask); got lengths {sorted({len(p) for p in prompts})}")
        cache = new_kv_cache(model, B, max_len=ids.shape[1] + longest, static=True)
    elif all_layers_sliding(model.config) and not padded:  # Mistral: memory bounded by the window
        cache = RollingKVCache.for_model(model, B)
    else:
        cache = new_kv_cache(model, B, max_len=ids.shape[1] + longest)
    mask = mask if padded else None  # the mask appears when a row is padded or finishes while others go on
    if compile and step is None:
        step = functools.partial(compiled_decode_step(), model)
    step = step or (lambda tokens, cache, mask: decode_step(model, tokens, cache, mask))
    embeds = prompt_embeddings(model, ids, images, [len(p) for p in prompts]) if images is not None else None
    logits = prefill(model, ids, cache, mask, inputs_embeds=embeds)
    sampler = Sampler(rows, logits.shape[-1], device)
    generators = make_generators(rows, device)
    history = TokenHistory.from_tokens(prompts, logits.shape[-1], device) if sampler.needs_history else None
    states = [RequestState(sp, p, tokenizer, logits.shape[-1]) for p, sp in zip(prompts, rows, strict=True)]
    fed = ids.shape[1]  # tokens run through the model so far (cache positions, padding included)
    for _ in range(longest):
        tick_threads()  # fewer OpenMP threads while other processes use the CPU
        allowed = token_masks([None if s.finished else s.constraint for s in states], logits.shape[-1], device)
        out = sampler(logits, history, generators, allowed)
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
        token, active = out.tokens, None
        if any(done):  # finished rows feed padding, masked out from now on
            active = torch.tensor([not d for d in done], device=device)
            token = torch.where(active, token, torch.full_like(token, pad_id))
            # (the static cache masks by position and takes no mask: a finished row's padding reaches only its
            # own outputs, which are no longer read)
            if mask is None and not compile:
                mask = torch.ones((B, fed), dtype=torch.long, device=device)
        if mask is not None:
            mask = torch.cat([mask, (active.long() if active is not None else mask.new_ones(B))[:, None]], dim=1)
        if history is not None:
            history.append(token, active)
        logits = step(token, cache, mask)
        fed += 1


def check_images(images, prompts, fitted, compile: bool) -> list | None:
    """The per-prompt images, or None when no prompt has any; a prompt with images is never truncated."""
    if images is None or not any(i is not None for i in images):
        return None
    if len(images) != len(prompts):
        raise LmforgeError(f"got images for {len(images)} prompts, but {len(prompts)} prompts")
    if compile:
        raise LmforgeError("compile=True decodes text prompts only; a prompt with images runs eager")
    for row, (before, after) in enumerate(zip(prompts, fitted, strict=True)):
        if images[row] is not None and len(before) != len(after):
            raise LmforgeError(f"prompt {row} holds images and is too long for the context ({len(before)} tokens); "
                               "truncating it would cut an image: shorten it or lower max_new_tokens")
    return list(images)


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


def decode(model, prompt: Sequence[int], max_new_tokens: int = 128, temperature: float = 0.0,
           stop_token_ids: Sequence[int] = (), seed: int | None = None, step=None, compile: bool = False) -> list[int]:
    """The single-sequence fast path (batch 1, no mask): all new token ids of one prompt, the stop token included
    when one was produced. The same loop as `generate`; max_new_tokens 0 gives []. compile: see generate_stream."""
    if not prompt:
        raise LmforgeError("the prompt must contain at least one token")
    if max_new_tokens == 0:
        return []
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, stop_token_ids=stop_token_ids,
                            seed=seed)
    return generate(model, [prompt], params, step=step, compile=compile)[0]


def greedy_completion(model, prompt: Sequence[int], max_new_tokens: int, stop_token_ids: Sequence[int] = ()
                      ) -> list[int]:
    """The greedy continuation of `prompt` without its stop token, for evaluations and the samples written during
    training: a prompt too long for the context keeps its last tokens, and at most context - 1 tokens are made."""
    if max_new_tokens <= 0:
        return []
    params = SamplingParams(max_new_tokens=min(max_new_tokens, model.config.max_seq_len - 1), temperature=0.0,
                            stop_token_ids=stop_token_ids, truncate=True)
    out = generate(model, [prompt], params)[0]
    return out[:-1] if out and out[-1] in params.stop_token_ids else out
