"""Generation for encoder-decoder models (T5): the input is encoded once; the decoder starts from
decoder_start_token_id and writes one token per step on its cache (self-attention keys/values grown each step,
cross-attention keys/values of the encoder output projected once), sampled by lmforge's one Sampler and stopped
by the same RequestState as decoder-only generation (EOS, stop strings, max_new_tokens).
"""

from collections.abc import Iterator, Sequence

import torch

from lmforge.common.errors import LmforgeError
from lmforge.generation.request_state import RequestState, StepOutput
from lmforge.generation.sampling import Sampler, TokenHistory, make_generators
from lmforge.generation.sampling_params import SamplingParams


def right_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, S] and mask [B, S] (1 = token): the encoder is bidirectional, so padding goes at the end."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, :len(prompt)] = 1
    return ids, mask


@torch.inference_mode()
def seq2seq_stream(model, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams],
                   tokenizer=None) -> Iterator[list[StepOutput | None]]:
    """Yield, at each step, a StepOutput per input (None once it has finished), as generate_stream does."""
    rows = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
    if len(rows) != len(prompts) or not prompts or any(len(p) == 0 for p in prompts):
        raise LmforgeError("give one or more non-empty inputs and one SamplingParams (or one per input)")
    if tokenizer is None and any(p.stop for p in rows):
        raise LmforgeError("stop strings need a tokenizer to decode the output (pass tokenizer=...)")
    cfg = model.config
    device = model.shared.weight.device
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    ids, mask = (t.to(device) for t in right_pad(prompts, pad))
    encoder = model.encode(ids, mask)  # once
    cache = model.new_cache()
    B, longest = len(prompts), min(max(p.max_new_tokens for p in rows), cfg.max_seq_len)
    token = torch.full((B,), cfg.decoder_start_token_id, dtype=torch.long, device=device)
    logits = model.decode(token[:, None], encoder, mask, cache)[:, -1]
    sampler = Sampler(rows, logits.shape[-1], device)
    generators = make_generators(rows, device)
    history = TokenHistory.from_tokens([[] for _ in prompts], logits.shape[-1], device) \
        if sampler.needs_history else None
    states = [RequestState(sp, (), tokenizer, logits.shape[-1]) for sp in rows]
    for _ in range(longest):
        out = sampler(logits, history, generators)
        logprobs = out.logprobs.tolist() if out.logprobs is not None else [None] * B
        events: list[StepOutput | None] = []
        for row, (tok, state) in enumerate(zip(out.tokens.tolist(), states, strict=True)):
            events.append(None if state.finished else state.push(tok, logprobs[row]))
        yield events
        if all(state.finished for state in states):
            return
        token = out.tokens  # a finished row keeps decoding its own (unread) output: rows never mix
        if history is not None:
            history.append(token, torch.tensor([not s.finished for s in states], device=device))
        logits = model.decode(token[:, None], encoder, mask, cache)[:, -1]


def seq2seq_generate(model, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams],
                     tokenizer=None) -> list[list[int]]:
    """The generated ids of each input (its EOS included when one was produced)."""
    out: list[list[int]] = [[] for _ in prompts]
    for step in seq2seq_stream(model, prompts, params, tokenizer):
        for row, event in enumerate(step):
            if event is not None:
                out[row].append(event.token)
    return out
