"""lmforge's int4 linear (nibbles dequantized in registers, per-group scale and zero) on both instruction-set paths:
against the exact float64 product of the bf16 inputs and the dequantized weight (within bf16 rounding of the output
plus float32 rounding of the sums, tolerances set near the measured errors) and against PyTorch's
_weight_int4pack_mm_for_cpu, for group sizes 32-256, ragged output blocks and 0-13 rows; float32 outputs; bad inputs
refused."""

import pytest
import torch

from lmforge.quant.int_linear import (
    dequantize_int4,
    pack_nibbles,
    quantize_int4,
    to_kernel_scales_and_zeros,
    unpack_nibbles,
)

ROWS = (0, 1, 2, 3, 5, 8, 13)  # one pass holds 8 rows


def _quantized(out_features, in_features, group_size):
    q, scales, zeros = quantize_int4(torch.randn(out_features, in_features), group_size)
    return pack_nibbles(q), to_kernel_scales_and_zeros(scales, zeros), dequantize_int4(q, scales, zeros)


def _exact(x, w, b):
    y = x.double() @ w.double().T
    magnitude = x.double().abs() @ w.double().abs().T  # the float32 sums' rounding is relative to this
    return (y if b is None else y + b.double()), magnitude


@pytest.mark.parametrize("out_features,in_features,group_size", [
    (80, 64, 32), (576, 576, 64), (33, 96, 32), (1, 256, 256), (64, 384, 128)])
def test_linear_int4_equals_the_dequantized_product(quant_ops, quant_isa, out_features, in_features, group_size):
    """Measured (2026-12-06, both paths, SmolLM2-sized shapes): bf16 outputs within 1.05 bf16 units of the exact
    value; float32 outputs within 3.1 (AVX-512: the dot product sums (16 + q) x, then subtracts 16 sum(x)) and 1.2
    (AVX2) x 2^-24 sum(|x| |w|); against PyTorch's kernel at most 1 (AVX-512) / 2 (AVX2) bf16 units apart, 99.6%
    bitwise equal."""
    torch.manual_seed(out_features)
    nibbles, sz, w = _quantized(out_features, in_features, group_size)
    codes, packed_sz = quant_ops.pack_linear_int4(nibbles), quant_ops.pack_int4_scales(sz)
    aten_packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_nibbles(nibbles).to(torch.int32), 1) \
        if out_features % 16 == 0 else None  # PyTorch's kernel wants out_features a multiple of 16
    for rows in ROWS:
        b = torch.randn(out_features) if rows % 2 else None
        x = torch.randn(rows, in_features).bfloat16()
        out = quant_ops.linear_int4(x, codes, packed_sz, b, out_features)
        assert out.shape == (rows, out_features) and out.dtype == torch.bfloat16
        exact, magnitude = _exact(x, w, b)
        float_error = 4 * magnitude * 2 ** -24
        assert ((out.double() - exact).abs() <= exact.abs() * 2 ** -8 + float_error).all()  # bf16 rounding of y
        out32 = quant_ops.linear_int4(x, codes, packed_sz, b, out_features, float_out=True)
        assert out32.dtype == torch.float32 and ((out32.double() - exact).abs() <= float_error + 1e-30).all()
        if b is None and rows and aten_packed is not None:
            ref = torch.ops.aten._weight_int4pack_mm_for_cpu(x, aten_packed, group_size, sz)
            torch.testing.assert_close(out.float(), ref.float(), atol=1e-5, rtol=2 ** -6)
            assert (out == ref).float().mean() > 0.98


def test_bad_inputs_are_refused(quant_ops):
    nibbles, sz, _ = _quantized(40, 64, 32)
    codes, packed_sz = quant_ops.pack_linear_int4(nibbles), quant_ops.pack_int4_scales(sz)
    x = torch.randn(3, 64).bfloat16()
    with pytest.raises(RuntimeError, match="K a multiple of 8"):
        quant_ops.pack_linear_int4(torch.zeros(4, 6, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="x must be bf16 \\[..., 64\\]"):
        quant_ops.linear_int4(torch.randn(3, 56).bfloat16(), codes, packed_sz, None, 40)
    with pytest.raises(RuntimeError, match="out_features 70 does not match"):
        quant_ops.linear_int4(x, codes, packed_sz, None, 70)
    with pytest.raises(RuntimeError, match="must come from pack_int4_scales"):
        quant_ops.linear_int4(x, codes, sz, None, 40)
    with pytest.raises(RuntimeError, match="must come from pack_linear_int4"):
        quant_ops.linear_int4(x, nibbles, packed_sz, None, 40)
