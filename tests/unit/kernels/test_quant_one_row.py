"""The int8 x int8 kernels' one-row path (a decode step's: blocks of 32 outputs four at a time from four places in
memory, then two, then one; csrc/int8_dot.h int4_blocks_vnni / int8_blocks_vnni) computes each output as the batch
path does, bit for bit, for every count of blocks a thread's range leaves over, and its bf16 outputs are its float32
sums rounded as torch rounds them (write_row, vectorized)."""

import pytest
import torch

from lmforge.kernels import quant_linear
from lmforge.quant.int_linear import pack_nibbles, quantize_int4, quantize_int8, to_kernel_scales_and_zeros


@pytest.fixture
def vnni(quant_layer_ops):
    if not quant_linear.vnni():
        pytest.skip("this build has no AVX512-VNNI path")
    return quant_layer_ops


# blocks of 32 outputs: 1, 2, 3 (a pair + one), 4, 5, 7 (quads + pair + one), 18 (SmolLM2's 576 outputs)
OUTPUTS = (20, 64, 95, 128, 150, 224, 576)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.view(torch.int16) if a.dtype == torch.bfloat16 else a, b.view(
        torch.int16) if b.dtype == torch.bfloat16 else b)


@pytest.mark.parametrize("group_size", [32, 64])
def test_int4_one_row_equals_its_row_of_a_batch(vnni, group_size):
    torch.manual_seed(group_size)
    K = 192
    for N in OUTPUTS:
        q, s, z = quantize_int4(torch.randn(N, K), group_size)
        codes = vnni.pack_linear_int4(pack_nibbles(q))
        sz = vnni.pack_int4_scales(to_kernel_scales_and_zeros(s, z))
        x, bias = torch.randn(3, K).bfloat16(), torch.randn(N)
        for float_out in (False, True):
            batch = vnni.linear_int4(x, codes, sz, bias, N, float_out, True)
            for m in range(3):
                one = vnni.linear_int4(x[m:m + 1], codes, sz, bias, N, float_out, True)
                assert _same(one[0], batch[m]), (N, group_size, float_out, m)


def test_int8_one_row_equals_its_row_of_a_batch(vnni):
    torch.manual_seed(0)
    K = 100  # padded to 128 in the layout
    for N in OUTPUTS:
        q, scales = quantize_int8(torch.randn(N, K))
        packed = vnni.pack_linear_int8_vnni(q)
        x, bias = torch.randn(3, K).bfloat16(), torch.randn(N)
        for float_out in (False, True):
            batch = vnni.linear_int8(x, packed, scales.float(), bias, N, float_out)
            for m in range(3):
                one = vnni.linear_int8(x[m:m + 1], packed, scales.float(), bias, N, float_out)
                assert _same(one[0], batch[m]), (N, float_out, m)


def test_bf16_outputs_are_the_float32_sums_rounded(vnni):
    """Nearest even as torch rounds, infinities kept, NaN a NaN, -0 + 0 = +0 as the scalar loop gave."""
    torch.manual_seed(1)
    N, K = 150, 64
    q, s, z = quantize_int4(torch.randn(N, K), 32)
    codes = vnni.pack_linear_int4(pack_nibbles(q))
    sz = vnni.pack_int4_scales(to_kernel_scales_and_zeros(s, z))
    q8, scales = quantize_int8(torch.randn(N, K))
    packed8 = vnni.pack_linear_int8_vnni(q8)
    bias = torch.randn(N) * 1000
    bias[:4] = torch.tensor([float("inf"), -float("inf"), float("nan"), 3e38])
    x = torch.randn(1, K).bfloat16()
    for run in (lambda f: vnni.linear_int4(x, codes, sz, bias, N, f, True),
                lambda f: vnni.linear_int8(x, packed8, scales.float(), bias, N, f)):
        exact, rounded = run(True), run(False)
        nan = exact.isnan()
        assert torch.equal(rounded.isnan(), nan) and nan.sum() == 1
        assert _same(rounded[~nan], exact[~nan].bfloat16())
        assert rounded[0, 0] == float("inf") and rounded[0, 1] == -float("inf")
    zero = torch.zeros(1, K).bfloat16()  # every sum 0 and no bias: +0, not -0
    out = vnni.linear_int4(zero, codes, sz, None, N, False, True)
    assert (out.view(torch.int16) == 0).all()
