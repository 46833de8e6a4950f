"""lmforge's float32 linear kernel (FMA, AVX-512 builds) against a float64 computation and F.linear: within float32
rounding of the sums, for any row count, ragged output widths, biases and batch shapes; SwiGLU's gated projection
against the eager SiLU * up; bad inputs refused."""

import pytest
import torch
import torch.nn.functional as F


def assert_float32_close(out, x, weight, b):
    """|out - exact| within float32 rounding of sums of |x| |w| (what any summation order can differ by)."""
    exact = F.linear(x.double(), weight.double(), None if b is None else b.double())
    magnitude = F.linear(x.double().abs(), weight.double().abs(), None if b is None else b.double().abs())
    assert ((out.double() - exact).abs() <= magnitude * x.shape[-1] * 2 ** -24 + 1e-30).all()


@pytest.mark.parametrize("out_features,in_features", [(80, 48), (576, 576), (8, 1536), (33, 3), (49152, 64)])
@pytest.mark.parametrize("rows", [0, 1, 5, 12, 13, 30, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_f32_equals_f_linear(f32_ops, out_features, in_features, rows, bias):
    torch.manual_seed(rows + out_features)
    weight = torch.randn(out_features, in_features)
    b = torch.randn(out_features) if bias else None
    x = torch.randn(2, rows, in_features)
    out = f32_ops.linear_f32(x, f32_ops.pack_linear_f32(weight), b, out_features)
    assert out.shape == (2, rows, out_features) and out.dtype == torch.float32
    assert_float32_close(out, x, weight, b)
    torch.testing.assert_close(out, F.linear(x, weight, b), atol=1e-4, rtol=1e-4)


def test_linear_f32_reads_strided_inputs(f32_ops):
    weight = torch.randn(40, 64)
    x = torch.randn(64, 7).t()  # [7, 64], not contiguous
    torch.testing.assert_close(f32_ops.linear_f32(x, f32_ops.pack_linear_f32(weight), None, 40), F.linear(x, weight),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hidden,in_features", [(1536, 576), (64, 48), (16, 3)])
@pytest.mark.parametrize("rows", [0, 1, 13, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_silu_gated_linear_f32_equals_the_eager_swiglu_half(f32_ops, hidden, in_features, rows, bias):
    torch.manual_seed(rows + hidden)
    gate, up = (torch.randn(hidden, in_features) * 0.3 for _ in range(2))
    b_gate, b_up = ((torch.randn(hidden) if bias else None) for _ in range(2))
    packed = f32_ops.pack_linear_f32(torch.cat([gate, up]), gated=True)  # [gate; up]: the packing interleaves them
    x = torch.randn(rows, in_features)
    out = f32_ops.silu_gated_linear_f32(x, packed, torch.cat([b_gate, b_up]) if bias else None, hidden)
    assert out.shape == (rows, hidden)
    # float64 reference; each projection may differ by float32 rounding of its sum (e_g, e_u), which SiLU * up
    # carries as |silu'(g)| |u| e_g + |silu(g)| e_u with |silu'| <= 1.1 and |silu(g)| <= |g|, plus a few float32
    # roundings of the SiLU and the product
    x64 = x.double()
    g = F.linear(x64, gate.double(), None if b_gate is None else b_gate.double())
    u = F.linear(x64, up.double(), None if b_up is None else b_up.double())
    e_g, e_u = (F.linear(x64.abs(), w.double().abs()) * in_features * 2 ** -24 + 1e-30 for w in (gate, up))
    bound = 1.1 * (u.abs() + e_u) * e_g + (g.abs() + e_g) * e_u
    want = F.silu(g) * u
    assert ((out.double() - want).abs() <= bound * 1.01 + want.abs() * 2 ** -21 + 1e-30).all()  # + SiLU's rounding
    with pytest.raises(RuntimeError, match="hidden size 8 does not match"):
        f32_ops.silu_gated_linear_f32(x, packed, None, 8)


def test_bad_inputs_are_refused(f32_ops):
    packed = f32_ops.pack_linear_f32(torch.randn(40, 64))
    with pytest.raises(RuntimeError, match="a float32 \\[N, K\\] weight"):
        f32_ops.pack_linear_f32(torch.randn(4, 6).bfloat16())
    with pytest.raises(RuntimeError, match="gated weight"):
        f32_ops.pack_linear_f32(torch.randn(40, 6), gated=True)
    with pytest.raises(RuntimeError, match="x must be float32 \\[..., 64\\]"):
        f32_ops.linear_f32(torch.randn(3, 63), packed, None, 40)
    with pytest.raises(RuntimeError, match="x must be float32"):
        f32_ops.linear_f32(torch.randn(3, 64).bfloat16(), packed, None, 40)
    with pytest.raises(RuntimeError, match="out_features 70 does not match"):
        f32_ops.linear_f32(torch.randn(3, 64), packed, None, 70)
    with pytest.raises(RuntimeError, match="bias must be \\[40\\]"):
        f32_ops.linear_f32(torch.randn(3, 64), packed, torch.randn(39), 40)
    with pytest.raises(RuntimeError, match="must come from pack_linear_f32"):
        f32_ops.linear_f32(torch.randn(3, 64), torch.randn(40, 64), None, 40)
