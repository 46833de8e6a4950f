"""lmforge's AVX512-BF16 linear kernel against F.linear: the same bf16 numbers up to the order of float32 sums
(almost all bitwise), for any row count, ragged output widths, biases and batch shapes; bad inputs refused."""

import pytest
import torch
import torch.nn.functional as F


@pytest.mark.parametrize("out_features,in_features", [(80, 48), (576, 576), (8, 1536), (33, 2), (49152, 64)])
@pytest.mark.parametrize("rows", [0, 1, 5, 12, 13, 30, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_bf16_equals_f_linear(bf16_ops, out_features, in_features, rows, bias):
    torch.manual_seed(rows + out_features)
    weight = torch.randn(out_features, in_features).bfloat16()
    b = torch.randn(out_features).bfloat16() if bias else None
    x = torch.randn(2, rows, in_features).bfloat16()
    out = bf16_ops.linear_bf16(x, bf16_ops.pack_linear_bf16(weight), b, out_features)
    assert out.shape == (2, rows, out_features) and out.dtype == torch.bfloat16
    ref = F.linear(x, weight, b)
    torch.testing.assert_close(out.float(), ref.float(), atol=1e-2, rtol=2 ** -7)  # one bf16 unit at most
    if out.numel():
        assert (out == ref).float().mean() > 0.99
        exact = F.linear(x.double(), weight.double(), None if b is None else b.double())
        magnitude = F.linear(x.double().abs(), weight.double().abs())  # float32 sums err relative to this
        assert ((out.double() - exact).abs() <= exact.abs() * 2 ** -8 + magnitude * 2 ** -20).all()


def test_linear_bf16_reads_strided_inputs(bf16_ops):
    weight = torch.randn(40, 64).bfloat16()
    x = torch.randn(64, 7).bfloat16().t()  # [7, 64], not contiguous
    torch.testing.assert_close(bf16_ops.linear_bf16(x, bf16_ops.pack_linear_bf16(weight), None, 40).float(),
                               F.linear(x, weight).float(), atol=1e-2, rtol=2 ** -7)


def test_bad_inputs_are_refused(bf16_ops):
    packed = bf16_ops.pack_linear_bf16(torch.randn(40, 64).bfloat16())
    with pytest.raises(RuntimeError, match="K must be even"):
        bf16_ops.pack_linear_bf16(torch.randn(4, 5).bfloat16())
    with pytest.raises(RuntimeError, match="a bf16 \\[N, K\\] weight"):
        bf16_ops.pack_linear_bf16(torch.randn(4, 6))
    with pytest.raises(RuntimeError, match="x must be bf16 \\[..., 64\\]"):
        bf16_ops.linear_bf16(torch.randn(3, 63).bfloat16(), packed, None, 40)
    with pytest.raises(RuntimeError, match="x must be bf16"):
        bf16_ops.linear_bf16(torch.randn(3, 64), packed, None, 40)
    with pytest.raises(RuntimeError, match="out_features 70 does not match"):
        bf16_ops.linear_bf16(torch.randn(3, 64).bfloat16(), packed, None, 70)
    with pytest.raises(RuntimeError, match="bias must be \\[40\\]"):
        bf16_ops.linear_bf16(torch.randn(3, 64).bfloat16(), packed, torch.randn(39).bfloat16(), 40)
    with pytest.raises(RuntimeError, match="must come from pack_linear_bf16"):
        bf16_ops.linear_bf16(torch.randn(3, 64).bfloat16(), torch.randn(40, 64).bfloat16(), None, 40)


@pytest.mark.parametrize("hidden,in_features", [(1536, 576), (64, 48), (16, 2)])
@pytest.mark.parametrize("rows", [0, 1, 13, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_silu_gated_linear_equals_the_eager_swiglu_half(bf16_ops, hidden, in_features, rows, bias):
    torch.manual_seed(rows + hidden)
    gate, up = ((torch.randn(hidden, in_features) * 0.3).bfloat16() for _ in range(2))
    b_gate, b_up = ((torch.randn(hidden).bfloat16() if bias else None) for _ in range(2))
    # the layout the kernel expects: 16 gate rows, the same 16 up rows, and so on
    weight = torch.stack([gate.view(-1, 16, in_features), up.view(-1, 16, in_features)], 1).reshape(-1, in_features)
    b = torch.stack([b_gate.view(-1, 16), b_up.view(-1, 16)], 1).reshape(-1) if bias else None
    x = torch.randn(rows, in_features).bfloat16()
    out = bf16_ops.silu_gated_linear_bf16(x, bf16_ops.pack_linear_bf16(weight), b, hidden)
    ref = F.silu(F.linear(x, gate, b_gate)) * F.linear(x, up, b_up)
    assert out.shape == (rows, hidden)
    torch.testing.assert_close(out.float(), ref.float(), atol=1e-2, rtol=2 ** -6)
    if out.numel():
        assert (out == ref).float().mean() > 0.99
    with pytest.raises(RuntimeError, match="hidden size 8 does not match"):
        bf16_ops.silu_gated_linear_bf16(x, bf16_ops.pack_linear_bf16(weight), None, 8)
