"""oneDNN's packed linear: a weight reordered once into oneDNN's blocked layout, then multiplied without reordering
it again (what torch.compile's freezing pass does). The only file of lmforge that calls torch's private
`torch.ops.mkldnn` ops: torch has no public API for it, and it was measured necessary (a bf16 projection of SmolLM2's
sizes 2.2-2.7x faster than F.linear at 1-32 rows on a 2-core Intel AMX CPU, SmolLM2 fp32 decoding 1.35x faster on
Zen 4; see lmforge/model/packed_linear.py). Where a torch build lacks the ops, `packing_available` says False and
every caller keeps the public F.linear, which computes the same thing (tests/unit/test_backend_table.py).
"""

import functools

import torch


def _mkldnn():
    """torch's private oneDNN op namespace (a function, so that a test can take it away)."""
    return torch.ops.mkldnn


@functools.cache
def packing_available(dtype: torch.dtype = torch.bfloat16) -> bool:
    """True when this torch build can pack `dtype` linears (bf16 or fp32; CPU with oneDNN, and bf16 support for
    bf16): checked once by packing and running a 2 x 2 weight."""
    if dtype not in (torch.bfloat16, torch.float32) or not torch.backends.mkldnn.is_available():
        return False
    try:
        ops = _mkldnn()
        if dtype == torch.bfloat16 and not ops._is_mkldnn_bf16_supported():
            return False
        out = linear(torch.ones(1, 2, dtype=dtype), pack(torch.ones(2, 2, dtype=dtype)), None)
        return bool(torch.equal(out, torch.full((1, 2), 2.0, dtype=dtype)))
    except (RuntimeError, AttributeError):  # a build without these private oneDNN ops
        return False


def pack(weight: torch.Tensor) -> torch.Tensor:
    """A CPU [out, in] bf16 / fp32 weight in oneDNN's layout for `linear` (an opaque tensor)."""
    return _mkldnn()._reorder_linear_weight(weight, 1)


def linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ W.T (+ bias) for a weight from `pack`: F.linear's oneDNN kernel, bitwise its result in bf16."""
    return _mkldnn()._linear_pointwise(x, packed, bias, "none", [], "")
