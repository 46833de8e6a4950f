"""A decode step's attention in one kernel call (torch.ops.lmforge.cached_attention, csrc/cached_attention.cpp),
installed by `prepare_for_inference` on attention layers whose q/k/v it fused.

Between the fused q/k/v projection and the o projection the eager Attention.forward runs a split, views and
transposes, two RoPE calls, the cache's writes and slices, SDPA and a transpose-and-copy back: ~30 operator calls
per layer and step. The kernel rotates the queries and the new keys (rounded as the eager RoPE rounds them), writes
the new keys and values into the cache and attends over it in place, in float32. It takes what a batch-1 decode step
on the contiguous KV cache gives (generate's single-sequence path): one new token, no attention mask, no LogN
scaling, a cache whose backend hands over its buffers (`AttentionBackend.kv_buffers`); for any other call it
returns None and the layer runs its eager code.
"""

import torch

from lmforge.model.attention_backend import AttentionBackend


class CachedAttentionKernel:
    """`Attention.fused`: the layer's whole forward at decode time, or None where the eager code runs."""

    def __init__(self, ops):
        self.kernel = ops.cached_attention

    @staticmethod
    def applies_to(attn) -> bool:
        """A layer the kernel can run: fused q/k/v, no per-head QK norm, heads a multiple of 16 wide up to 256 (whole
        vectors of any width the kernels build at, as the paged cache's kernel asks)."""
        D = attn.head_dim
        return attn.qkv_proj is not None and attn.q_norm is None and D % 16 == 0 and D <= 256

    def __call__(self, attn, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                 mask: torch.Tensor | None, backend: AttentionBackend, q_scale: torch.Tensor | None):
        if mask is not None or q_scale is not None or x.shape[0] != 1 or x.shape[1] != 1:
            return None
        buffers = backend.kv_buffers()
        if buffers is None:
            return None
        keys, values, start = buffers
        if x.dtype != keys.dtype or x.device.type != "cpu" or \
                (cos is not None and (cos.dtype != x.dtype or cos.shape[-1] != attn.head_dim)):
            return None
        scale = attn.head_dim ** -0.5 if attn.scale is None else attn.scale
        y = self.kernel(attn.qkv_proj(x), cos, sin, keys, values, attn.layer_idx, start, attn.n_heads, scale)
        return attn.o_proj(y)
