"""The model call of decoding, in the gpt-fast shape: `prefill` the prompt, then `decode_step` one token at a time.

Every decoder in lmforge goes through `model_step`: the generate loop (generate.py), beam search, speculative
decoding (target and draft models) and the serving engine's batched step over its paged cache (engine/runner.py).
It feeds token ids after what the cache holds and returns float logits of the positions that choose a token.
A rolling (sliding-window) cache takes its positions from the cache rather than from a padding mask.
`compiled_decode_step` is decode_step through torch.compile, for the static-shape cache (generate(compile=True)).
"""

import functools

import torch

from lmforge.generation.cache import RollingKVCache


def model_step(model, ids: torch.Tensor, cache, *, mask: torch.Tensor | None = None,
               positions: torch.Tensor | None = None, logits_at: torch.Tensor | None = None,
               inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Run ids [B, T] through `model` on `cache`; float logits of the last position [B, V], or [B, N, V] of the
    positions `logits_at` [N] (e.g. each packed sequence's last token, or the k + 1 verified speculative ones).

    mask: [B, S] over cached + new tokens (1 = token, 0 = left padding); None when no row is padded.
    positions: explicit positions [B, T] (the paged cache packs several sequences in one row).
    `model` is any callable with the Transformer's forward signature (e.g. an MTP draft's target_forward).
    inputs_embeds: [B, T, D] embeddings to run instead of the ids' (a prompt with images: generation/images.py).
    """
    if positions is None and isinstance(cache, RollingKVCache):  # no padding; positions come from the cache
        positions, mask = cache.positions(ids.shape[1]), None
    kwargs = {}  # only what is set: the adapter wrappers of lmforge.peft take no positions
    if mask is not None:
        kwargs["attention_mask"] = mask
    if positions is not None:
        kwargs["positions"] = positions
    if inputs_embeds is not None:
        kwargs["inputs_embeds"] = inputs_embeds
    if logits_at is None:
        return model(ids, kv_cache=cache, last_only=True, **kwargs)[:, -1]
    return model(ids, kv_cache=cache, logit_indices=logits_at, **kwargs)


def prefill(model, ids: torch.Tensor, cache, mask: torch.Tensor | None = None,
            inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Run the whole prompt [B, T] once, filling the cache; logits of its last position [B, V]."""
    return model_step(model, ids, cache, mask=mask, inputs_embeds=inputs_embeds)


def decode_step(model, tokens: torch.Tensor, cache, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Feed one token per sequence [B] at the next position; logits [B, V]."""
    return model_step(model, tokens[:, None], cache, mask=mask)


@functools.cache
def compiled_decode_step():
    """decode_step through torch.compile(fullgraph=True) (one wrapper per process; graphs are kept per model and
    cache shape). On the static cache its shapes never change, so it is captured once."""
    return torch.compile(decode_step, fullgraph=True)
