"""Paged KV cache storage on CPU: one pool of fixed-size blocks per entry kind, read through each sequence's block
table (vLLM's PagedAttention, Kwon et al. 2023; nano-vllm's slot mapping).

The engine packs the new tokens of every scheduled sequence into one row [1, N] (no padding in the MLPs) and calls
`prepare` once per step; the planner (paged_plan.py) turns the block tables into metadata and the attention backend
(paged_backend.py) chosen at construction writes each layer's new entries and attends: the C++ kernel of
`lmforge.kernels` where it applies and builds (CPU, float32/bfloat16 keys and values, head width a multiple of
16), else the pure-PyTorch path (also MLA's). The pool holds keys and values (MHA/GQA/MQA) or, for MLA, only the
latent and the shared RoPE key.

Layout: each pool is [layers, heads, slots, width], head-major (MLA's entries have one "head"), so that gathering
whole blocks gives [heads, sequences, length, width] and the decode matmuls run on it without a copy.
"""

import logging

import torch

from lmforge.generation.cache.paged_backend import PagedKernelBackend, PagedTorchBackend
from lmforge.generation.cache.paged_plan import StepItems, group_by_length
from lmforge.kernels.cpu_kernels import cpu_ops

__all__ = ["PagedKVCache", "group_by_length"]
logger = logging.getLogger(__name__)


class PagedKVCache:
    def __init__(self, n_layers: int, num_blocks: int, block_size: int, entry_shapes: dict[str, tuple[int, ...]],
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", kernel: bool = True,
                 alibi_slopes: torch.Tensor | None = None):
        """entry_shapes: what one token stores per layer, e.g. {"k": (H_kv, D), "v": (H_kv, D)} or MLA's
        {"latent": (kv_lora_rank,), "k_rope": (qk_rope_head_dim,)}. kernel: attend through the C++ kernel of
        `lmforge.kernels` where it applies and builds; False keeps the pure-PyTorch path. alibi_slopes [H]: an
        ALiBi model's; the C++ kernel adds no biases, so such a model always takes the PyTorch path (logged)."""
        self.block_size = block_size
        heads = {name: shape[0] if len(shape) == 2 else 1 for name, shape in entry_shapes.items()}
        self.pools = {name: torch.zeros((n_layers, heads[name], num_blocks * block_size, shape[-1]), dtype=dtype,
                                        device=device)
                      for name, shape in entry_shapes.items()}
        ops = None  # torch.ops.lmforge when its kernels serve this cache
        if kernel and "k" in entry_shapes and entry_shapes["k"][-1] % 16 == 0 and \
                torch.device(device).type == "cpu" and dtype in (torch.float32, torch.bfloat16):
            ops = cpu_ops()
        if ops is not None and alibi_slopes is not None:
            logger.warning("ALiBi model: the C++ paged-attention kernel adds no ALiBi biases; attending through the "
                           "PyTorch paged path instead")
            ops = None
        self.backend = PagedKernelBackend(self.pools, block_size, ops) if ops is not None else \
            PagedTorchBackend(self.pools, block_size, alibi_slopes)

    @property
    def device(self) -> torch.device:
        return next(iter(self.pools.values())).device

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: duplicate whole blocks (src -> dst) in every layer."""
        bs = self.block_size
        for src, dst in pairs:
            for pool in self.pools.values():
                pool[:, :, dst * bs:(dst + 1) * bs] = pool[:, :, src * bs:(src + 1) * bs]

    def prepare(self, items: StepItems) -> None:
        """Set up one step from (block_table, start, num_tokens) per sequence, in packed order."""
        self.backend.plan = self.backend.planner(items, self.block_size, self.device)
