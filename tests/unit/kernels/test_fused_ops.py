"""The fused CPU kernels (RMSNorm, in-place RoPE, SiLU * up, row argmax) against the eager code they replace: bfloat16
RoPE and SiLU bitwise, RMSNorm within one bf16 unit (its mean sums in another order), float32 to rounding, argmax
index for index (ties and NaN included)."""

import pytest
import torch
import torch.nn.functional as F

from lmforge.generation.sampling import Sampler, make_generators
from lmforge.generation.sampling_params import SamplingParams
from lmforge.model.norms import RMSNorm
from lmforge.model.rope import apply_rope, rope_cos_sin, rope_inv_freq

DTYPES = [torch.float32, torch.bfloat16]


def close(got, ref, dtype):
    if dtype == torch.float32:
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    else:  # one bf16 unit in the last place at most
        torch.testing.assert_close(got.float(), ref.float(), atol=1e-2, rtol=2 ** -7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 18, 576), (3, 40), (2, 5, 7), (1, 16), (0, 64)])
def test_rms_norm_equals_the_eager_norm(ops, dtype, shape):
    torch.manual_seed(0)
    norm = RMSNorm(shape[-1], eps=1e-5).to(dtype)
    norm.weight.data = torch.randn(shape[-1]).to(dtype)
    x = (torch.randn(shape) * 3).to(dtype)
    with torch.inference_mode():
        ref, got = norm(x), ops.rms_norm(x, norm.weight, 1e-5)
    assert got.shape == x.shape and got.dtype == dtype
    close(got, ref, dtype)
    if dtype == torch.bfloat16 and x.numel():
        assert (got == ref).float().mean() > 0.97  # mostly bitwise: only a last-bit rounding may differ


def test_rms_norm_reads_strided_inputs(ops):
    x = torch.randn(4, 9, 64).transpose(0, 1)  # not contiguous
    norm = RMSNorm(64, 1e-6)
    norm.weight.data = torch.randn(64)
    with torch.inference_mode():
        close(ops.rms_norm(x, norm.weight, 1e-6), norm(x), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,heads,tokens,width", [(1, 9, 18, 64), (2, 3, 5, 80), (1, 2, 3, 8), (1, 4, 300, 32)])
def test_rope_in_place_equals_apply_rope(ops, dtype, batch, heads, tokens, width):
    torch.manual_seed(0)
    # x as the attention has it: a head-split view of a fused projection's output, transposed to [B, H, T, D]
    proj = torch.randn(batch, tokens, (heads + 1) * width).to(dtype)
    x = proj[..., :heads * width].view(batch, tokens, heads, width).transpose(1, 2)
    positions = torch.stack([torch.arange(100 * b, 100 * b + tokens) for b in range(batch)])
    cos, sin = rope_cos_sin(positions, rope_inv_freq(width, 10000.0), dtype)
    ref = apply_rope(x, cos, sin)
    untouched = proj[..., heads * width:].clone()
    ops.rope_(x, cos, sin)
    if dtype == torch.bfloat16:
        assert torch.equal(x, ref)
    else:
        close(x, ref, dtype)
    assert torch.equal(proj[..., heads * width:], untouched)  # only x's part of the buffer is written


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 18, 3072), (4, 80), (2, 6), (0, 32)])
def test_silu_mul_equals_silu_gate_times_up(ops, dtype, shape):
    torch.manual_seed(0)
    h = (torch.randn(shape) * 4).to(dtype)
    gate, up = h.chunk(2, dim=-1)
    got = ops.silu_mul(h)
    assert got.shape == gate.shape
    if dtype == torch.bfloat16:  # SiLU rounded to bf16 before the product, as the eager ops do
        assert torch.equal(got, F.silu(gate) * up)
    else:
        close(got, F.silu(gate) * up, dtype)


def test_bad_inputs_are_refused_with_clear_errors(ops):
    with pytest.raises(RuntimeError, match="x \\[..., D\\] and weight \\[D\\]"):
        ops.rms_norm(torch.randn(2, 8), torch.randn(7), 1e-6)
    with pytest.raises(RuntimeError, match="one dtype"):
        ops.rms_norm(torch.randn(2, 8), torch.randn(8, dtype=torch.bfloat16), 1e-6)
    with pytest.raises(RuntimeError, match="float32 and bfloat16"):
        ops.rms_norm(torch.randn(2, 8, dtype=torch.float64), torch.randn(8, dtype=torch.float64), 1e-6)
    x = torch.randn(1, 2, 3, 8)
    with pytest.raises(RuntimeError, match="cos and sin must be contiguous"):
        ops.rope_(x, torch.randn(1, 4, 8), torch.randn(1, 4, 8))
    with pytest.raises(RuntimeError, match="even D"):
        ops.rope_(torch.randn(1, 2, 3, 7), torch.randn(1, 3, 7), torch.randn(1, 3, 7))
    with pytest.raises(RuntimeError, match="\\[..., 2F\\]"):
        ops.silu_mul(torch.randn(3, 5))


@pytest.mark.parametrize("rows, vocab", [(1, 1), (3, 5), (2, 16), (4, 17), (18, 49152), (40, 100)])
def test_argmax_rows_equals_torch_argmax_with_ties_infinities_and_nan(ops, rows, vocab):
    torch.manual_seed(0)
    x = torch.randn(rows, vocab)
    assert torch.equal(ops.argmax_rows(x), x.argmax(-1))
    ties = torch.randint(0, 3, (rows, vocab)).float()  # several maxima per row: the first one counts
    assert torch.equal(ops.argmax_rows(ties), ties.argmax(-1))
    ties[0, vocab // 2] = float("nan")  # a NaN wins wherever it is, as in torch
    ties[-1] = float("-inf")
    ties[-1, vocab - 1] = float("nan") if rows > 1 else float("-inf")
    assert torch.equal(ops.argmax_rows(ties), ties.argmax(-1))
    assert torch.equal(ops.argmax_rows(x.t().contiguous().t()), x.argmax(-1))  # strided input


def test_argmax_rows_refuses_what_it_does_not_handle(ops):
    for bad in (torch.zeros(3), torch.zeros(2, 0), torch.zeros(2, 4, dtype=torch.bfloat16)):
        with pytest.raises(RuntimeError, match="argmax_rows"):
            ops.argmax_rows(bad)


def test_the_sampler_draws_the_same_tokens_with_the_kernel_argmax(ops, monkeypatch):
    torch.manual_seed(0)
    logits = torch.randn(6, 1000)
    params = [SamplingParams(), SamplingParams(temperature=0.8, seed=1),
              SamplingParams(temperature=1.2, top_p=0.9, seed=2)] * 2
    with_kernel = Sampler(params, 1000)(logits, generators=make_generators(params, "cpu")).tokens
    monkeypatch.setattr("lmforge.generation.sampling.loaded_ops", lambda: None)
    assert torch.equal(Sampler(params, 1000)(logits, generators=make_generators(params, "cpu")).tokens, with_kernel)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 576), (1, 18, 576), (3, 40), (2, 5, 7), (0, 64)])
def test_add_rms_norm_is_the_residual_add_then_the_norm(ops, dtype, shape):
    torch.manual_seed(0)
    weight = torch.randn(shape[-1]).to(dtype)
    x, h = (torch.randn(shape) * 3).to(dtype), torch.randn(shape).to(dtype)
    total, normed = ops.add_rms_norm(x, h, weight, 1e-5)
    assert torch.equal(total, x + h)  # rounded once to the dtype, as the eager add
    assert torch.equal(normed, ops.rms_norm(x + h, weight, 1e-5))  # the norm kernel's numbers bit for bit
    norm = RMSNorm(shape[-1], eps=1e-5).to(dtype)
    norm.weight.data = weight
    with torch.inference_mode():
        close(normed, norm(x + h), dtype)
    with pytest.raises(RuntimeError, match="one shape and dtype"):
        ops.add_rms_norm(x, h.float() if dtype == torch.bfloat16 else h.bfloat16(), weight, 1e-5)
