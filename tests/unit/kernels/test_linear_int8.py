"""lmforge's int8 linear (codes dequantized in registers) on both instruction-set paths: against the exact float64
product of the bf16 inputs and the dequantized weight (within bf16 rounding of the output plus float32 rounding of
the sums, tolerances set near the measured errors) and against PyTorch's _weight_int8pack_mm, for inputs not a
multiple of the vector width, ragged output blocks and 0-13 rows; float32 outputs; bad inputs refused."""

import pytest
import torch

from lmforge.quant.int_linear import quantize_int8


def _exact(x, q, scales, b):
    w = q.double() * scales.double()[:, None]
    y = x.double() @ w.T
    magnitude = x.double().abs() @ w.abs().T  # the float32 sums' rounding is relative to this
    return (y if b is None else y + b.double()), magnitude


ROWS = (0, 1, 2, 3, 5, 8, 13)  # one pass of the AVX-512 path holds 12 rows, of the AVX2 path 2


@pytest.mark.parametrize("out_features,in_features", [(80, 48), (576, 576), (33, 100), (1, 7)])
def test_linear_int8_equals_the_dequantized_product(quant_ops, quant_isa, out_features, in_features):
    """Measured (2026-12-06, both paths, SmolLM2-sized shapes): bf16 outputs within 0.99 of a bf16 unit of the exact
    value; float32 outputs within 0.96 x 2^-24 sum(|x| |w|); against PyTorch's kernel at most 1 (AVX-512) / 2 (AVX2)
    bf16 units apart, 99.8% bitwise equal."""
    torch.manual_seed(out_features)
    q, scales = quantize_int8(torch.randn(out_features, in_features))
    packed = quant_ops.pack_linear_int8(q)
    for rows in ROWS:
        b = torch.randn(out_features) if rows % 2 else None
        x = torch.randn(rows, in_features).bfloat16()
        out = quant_ops.linear_int8(x, packed, scales, b, out_features)
        assert out.shape == (rows, out_features) and out.dtype == torch.bfloat16
        exact, magnitude = _exact(x, q, scales, b)
        float_error = 2 * magnitude * 2 ** -24
        assert ((out.double() - exact).abs() <= exact.abs() * 2 ** -8 + float_error).all()  # bf16 rounding of y
        out32 = quant_ops.linear_int8(x, packed, scales, b, out_features, float_out=True)
        assert out32.dtype == torch.float32 and ((out32.double() - exact).abs() <= float_error + 1e-30).all()
        if b is None and rows and in_features % 16 == 0:  # PyTorch's kernel (bf16 scales, no bias; it crashes on
            # inputs not a multiple of 16, torch 2.13)
            ref = torch.ops.aten._weight_int8pack_mm(x, q, scales.bfloat16())
            torch.testing.assert_close(out.float(), ref.float(), atol=1e-5, rtol=2 ** -6)
            assert (out == ref).float().mean() > 0.98


def test_linear_int8_batch_shapes_and_strided_inputs(quant_ops, quant_isa):
    q, scales = quantize_int8(torch.randn(40, 64))
    x = torch.randn(64, 6).bfloat16().t()  # [6, 64], not contiguous
    packed = quant_ops.pack_linear_int8(q)
    out = quant_ops.linear_int8(x.reshape(2, 3, 64), packed, scales, None, 40)
    assert out.shape == (2, 3, 40)
    exact, magnitude = _exact(x, q, scales, None)
    assert ((out.reshape(6, 40).double() - exact).abs() <= exact.abs() * 2 ** -8 + magnitude * 2 ** -23).all()


def test_bad_inputs_are_refused(quant_ops):
    q, scales = quantize_int8(torch.randn(40, 64))
    packed = quant_ops.pack_linear_int8(q)
    with pytest.raises(RuntimeError, match="an int8 \\[N, K\\] weight"):
        quant_ops.pack_linear_int8(torch.randn(4, 6))
    with pytest.raises(RuntimeError, match="x must be bf16 \\[..., 64\\]"):
        quant_ops.linear_int8(torch.randn(3, 63).bfloat16(), packed, scales, None, 40)
    with pytest.raises(RuntimeError, match="out_features 70 does not match"):
        quant_ops.linear_int8(torch.randn(3, 64).bfloat16(), packed, scales, None, 70)
    with pytest.raises(RuntimeError, match="scales must be \\[40\\]"):
        quant_ops.linear_int8(torch.randn(3, 64).bfloat16(), packed, scales[:39], None, 40)
    with pytest.raises(RuntimeError, match="must come from pack_linear_int8"):
        quant_ops.linear_int8(torch.randn(3, 64).bfloat16(), q, scales, None, 40)
    with pytest.raises(RuntimeError, match="unknown instruction set 'sse'"):
        quant_ops.quant_linear_isa("sse")
