"""Attention backends (vLLM's shape): an attention layer computes its q, k, v and hands them to one backend, which
decides where new keys/values are stored and how attention runs over them.

The model is given a backend per forward pass: none -> `SDPA` (training, scoring: no cache); a KV cache brings its
own (`kv_cache.backend`: contiguous, static, rolling, paged torch or paged C++; lmforge.generation.cache). The
model never asks what kind of cache it was given.
"""

import torch
import torch.nn.functional as F


class AttentionBackend:
    """One forward pass's attention: `begin` before the layers, `attend` / `attend_latent` per layer, `end` after."""

    explicit_positions = False  # True: the caller passes positions (packed sequences, rolling windows)
    needs_mask = True  # False: the backend masks by itself, the model builds no attention masks for it
    # ALiBi models fold their biases into the masks; a backend that masks by itself must add them itself (its
    # per-head slopes here) or the model refuses to run on it (transformer.py): never attention without positions.
    alibi_slopes: torch.Tensor | None = None

    def begin(self, num_tokens: int) -> int | torch.Tensor:
        """Check there is room for num_tokens new tokens; return the cache offset of the first one (0 without a
        cache; a 0-dim tensor for a static cache, so that a compiled step does not depend on a Python int)."""
        return 0

    def end(self, num_tokens: int) -> None:
        """After the last layer: the new tokens are stored (a cache advances)."""

    def kv_buffers(self) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """(keys, values, start) for a kernel that writes the new entries and attends in place (attention_kernel.py):
        the cache's buffers [layers, 1, H_kv, max_len, D] of a batch-1 contiguous cache and the position this pass's
        first new token goes to; None (here) where the backend keeps another layout."""
        return None

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
               is_causal: bool, scale: float | None) -> torch.Tensor:
        """Queries q [B, Hq, T, D], the new keys/values k, v [B, H_kv, T, D] -> output [B, Hq, T, D]. mask /
        is_causal describe cached + new keys (layer_inputs.py); backends that keep their own layout ignore them."""
        raise NotImplementedError

    def attend_latent(self, layer: int, mla, q_nope: torch.Tensor, q_rope: torch.Tensor, latent: torch.Tensor,
                      k_rope: torch.Tensor, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        """MLA: queries [B, H, T, ·], the new latent [B, T, r] and RoPE key [B, T, rope] -> output [B, H, T, v].
        `mla.attention_path(decode)` is the module's own computation (naive or absorbed) over given entries."""
        raise NotImplementedError


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool,
         scale: float | None) -> torch.Tensor:
    """torch's fused attention; K/V heads shared by groups of query heads without repeating them (GQA/MQA)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale,
                                          enable_gqa=q.shape[1] != k.shape[1])


class SDPABackend(AttentionBackend):
    """No cache: attention over the keys of this forward pass only."""

    def attend(self, layer, q, k, v, mask, is_causal, scale):
        return sdpa(q, k, v, mask, is_causal, scale)

    def attend_latent(self, layer, mla, q_nope, q_rope, latent, k_rope, mask, is_causal):
        return mla.attention_path(decode=False)(q_nope, q_rope, latent, k_rope, mask, is_causal)


SDPA = SDPABackend()


def backend_of(kv_cache) -> AttentionBackend:
    """The backend of one forward pass: the cache's own, or SDPA without a cache."""
    return SDPA if kv_cache is None else kv_cache.backend
