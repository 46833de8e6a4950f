"""Decode-speed measurement shared by `lmforge bench decode` and benchmarks/decode.py.

Batch-1 decoding is memory-bound: each new token reads every weight once, so tokens/s can not beat
bandwidth / weight bytes. We measure the machine's read bandwidth in the same run (a large tensor sum) and report
each model's speed next to that bound, and next to what the projections alone run at with this machine's matmul
kernels (the gap between those two is the kernels'; the gap below the second is everything else a step does).
Every timing takes a `clock` (common/timing.py): wall time, or the process's CPU time on a machine others load.
"""

import time

import torch
from torch import nn

from lmforge.common.timing import best_time
from lmforge.generation.generate import decode
from lmforge.model.inference import KernelLinear
from lmforge.model.packed_linear import PackedLinear
from lmforge.quant.int_linear import Int4Linear, Int8Linear
from lmforge.quant.smoothquant import W8A8Linear

PROMPT = "Once upon a time, in a small village by the sea, there lived"


def read_bandwidth_gb_s(size_mb: int = 1024, repeat: int = 5, clock=time.perf_counter,
                        device: torch.device | str = "cpu") -> float:
    """Best-of-`repeat` read bandwidth (GB/s) over a float32 tensor much larger than the caches, in the memory of
    `device` (a GPU's: each read waits for the kernel): the faster of a sum (one stream) and a dot product of its
    two halves (two streams; one CPU core reads two streams faster, and the decode kernels read two)."""
    x = torch.ones(size_mb * 2**20 // 4, device=device)
    half = x.numel() // 2
    best = float("inf")
    for read in (x.sum, lambda: torch.dot(x[:half], x[half:2 * half])):
        timed = read if x.device.type == "cpu" else lambda read=read: (read(), torch.cuda.synchronize(x.device))
        timed()
        best = min(best, best_time(timed, repeat, clock)[0])
    return x.numel() * 4 / best / 1e9


def bytes_read_per_token(model: nn.Module) -> int:
    """Bytes of weights one decode step reads: every projection (quantized codes + scales) and the norms.

    The embedding table is not counted (a lookup reads one row), except through a tied float lm_head.
    """
    total = 0
    for module in model.modules():
        if isinstance(module, (PackedLinear, KernelLinear, Int4Linear, Int8Linear, W8A8Linear)):
            total += module.weight_bytes()  # in the layout its kernel reads
        elif not isinstance(module, nn.Embedding) and not list(module.children()):  # float linears and norms
            total += sum(t.numel() * t.element_size() for t in module.parameters(recurse=False))
    return total


@torch.inference_mode()
def projections_only_tokens_per_s(model: nn.Module, repeat: int = 5, clock=time.perf_counter) -> float:
    """Tokens/s if a decode step did nothing but its projections: every linear (float, packed or quantized) run
    once on one row of the model's dtype, in model order, best of `repeat`. The weights stream from memory as in
    a real step, so this is the ceiling that the matmul kernels allow."""
    kinds = (nn.Linear, PackedLinear, KernelLinear, Int8Linear, Int4Linear)
    projections = [m for m in model.modules() if isinstance(m, kinds)]
    weight = next(p for p in model.parameters() if p.is_floating_point())
    inputs = [torch.randn(1, m.in_features, dtype=weight.dtype, device=weight.device) for m in projections]
    on_gpu = weight.device.type == "cuda"

    def step():
        for m, x in zip(projections, inputs, strict=True):
            m(x)
        if on_gpu:  # the kernels run asynchronously: time them, not their launches
            torch.cuda.synchronize(weight.device)

    step()
    best, _ = best_time(step, repeat, clock)
    return 1 / best


def decode_tokens_per_s(model, prompt: list[int], tokens: int, repeat: int = 3,
                        clock=time.perf_counter) -> tuple[float, list[int]]:
    """(best tokens/s over `repeat` greedy runs of `tokens` new tokens, the tokens of the last run)."""
    decode(model, prompt, max_new_tokens=8)  # warm-up: first calls of oneDNN / kernel paths are slow
    best, out = best_time(lambda: decode(model, prompt, max_new_tokens=tokens), repeat, clock)
    return tokens / best, out
