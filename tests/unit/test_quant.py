"""Weight-only int8 / int4: kernels equal dequantize-then-matmul, rounding error bounds, save/load, QAT (STE)."""

import pytest
import torch
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.formats.loader import load
from lmforge.formats.quant_io import save_quantized
from lmforge.model import Transformer, get_preset
from lmforge.quant.int_linear import (
    Int4Linear,
    Int8Linear,
    dequantize_int4,
    dequantize_int8,
    pack_nibbles,
    quantize_int4,
    quantize_int8,
    quantize_model,
    unpack_nibbles,
)
from lmforge.quant.qat import FakeQuantLinear, convert_qat, enable_qat


def reference_matmul(x, w_dequantized):
    """The kernels take bf16 activations: round x the same way, then multiply exactly in float64."""
    return x.to(torch.bfloat16).double() @ w_dequantized.double().T


def test_int8_rounding_error_is_at_most_half_a_step():
    w = torch.randn(64, 96)
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert ((dequantize_int8(q, s) - w).abs() <= s[:, None] / 2 + 1e-6).all()


@pytest.mark.parametrize("group_size", [32, 64])
def test_int4_rounding_error_is_at_most_half_a_step(group_size):
    w = torch.randn(48, 128) * torch.linspace(0.1, 3, 128)  # groups with very different ranges
    q, scales, zeros = quantize_int4(w, group_size)
    assert q.min() >= 0 and q.max() <= 15 and scales.shape == (48, 128 // group_size)
    err = (dequantize_int4(q, scales, zeros) - w).abs().reshape(48, -1, group_size)
    # half a step, plus the bf16 rounding of the zero point (which moves the grid by up to 2^-8 of its value)
    bound = scales[..., None] / 2 + zeros.abs()[..., None] * 2**-8 + 1e-6
    assert (err <= bound).all()


def test_pack_nibbles_round_trips():
    q = torch.randint(0, 16, (8, 64), dtype=torch.uint8)
    assert torch.equal(unpack_nibbles(pack_nibbles(q)), q)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_equals_dequantize_then_matmul(dtype):
    linear = nn.Linear(96, 80, bias=True)
    module = Int8Linear.from_linear(linear)
    x = torch.randn(3, 5, 96)
    q, s = quantize_int8(linear.weight)
    expected = reference_matmul(x, dequantize_int8(q, s.bfloat16())) + linear.bias.double()
    y = module(x.to(dtype))
    assert y.dtype == dtype and y.shape == (3, 5, 80)
    torch.testing.assert_close(y.double(), expected, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(module.dequantize(), dequantize_int8(q, s.bfloat16()))


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_linear_equals_dequantize_then_matmul(group_size):
    linear = nn.Linear(256, 80, bias=False)  # 80 rows: a partial block of the kernel's 64-row tiles
    module = Int4Linear.from_linear(linear, group_size)
    x = torch.randn(7, 256)
    q, scales, zeros = quantize_int4(linear.weight, group_size)
    expected = reference_matmul(x, dequantize_int4(q, scales, zeros))
    torch.testing.assert_close(module(x).double(), expected, rtol=2e-2, atol=3e-2)
    torch.testing.assert_close(module.dequantize(), dequantize_int4(q, scales, zeros))


def test_int4_rejects_a_group_size_that_does_not_divide():
    model = Transformer(get_preset("tiny-llama"))  # dim 64 is not a multiple of 128
    with pytest.raises(LmforgeError, match="group_size 128 does not divide"):
        quantize_model(model, bits=4, group_size=128)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_model_stays_close_and_reloads_identically(tmp_path, bits):
    model = Transformer(get_preset("tiny-llama")).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.no_grad():
        ref = model(ids)
        quantize_model(model, bits=bits, group_size=32)
        out = model(ids)
    assert isinstance(model.layers[0].attn.q_proj, Int8Linear if bits == 8 else Int4Linear)
    assert isinstance(model.lm_head, Int8Linear)  # head_bits defaults to 8, whatever the body's width
    assert model.lm_head.weight is not model.embed.weight and model.embed.weight.is_floating_point()
    cos = torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0)
    assert cos > (0.999 if bits == 8 else 0.98)
    save_quantized(model, tmp_path)
    again = load(tmp_path).model
    assert again.quant_config == model.quant_config
    with torch.no_grad():
        assert torch.equal(again(ids), out)


def test_skip_keeps_a_tied_lm_head_tied_through_save_and_load(tmp_path):
    model = Transformer(get_preset("tiny-llama")).eval()
    quantize_model(model, bits=8, skip=("lm_head",))
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is model.embed.weight
    save_quantized(model, tmp_path)
    again = load(tmp_path).model
    assert again.lm_head.weight is again.embed.weight
    ids = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        assert torch.equal(again(ids), model(ids))


@pytest.mark.parametrize("bits", [8, 4])
def test_ste_gradients_are_those_of_the_quantized_weights(bits):
    linear = nn.Linear(64, 32, bias=True)
    w_q = dequantize_int8(*quantize_int8(linear.weight)) if bits == 8 else \
        dequantize_int4(*quantize_int4(linear.weight, 32))
    fq = FakeQuantLinear.from_linear(linear, bits=bits, group_size=32)
    x = torch.randn(5, 64, requires_grad=True)
    grad_out = torch.randn(5, 32)
    y = fq(x)
    y.backward(grad_out)
    torch.testing.assert_close(y, x @ w_q.T + linear.bias)  # forward: the quantized weights
    torch.testing.assert_close(x.grad, grad_out @ w_q)  # d/dx at the quantized weights
    torch.testing.assert_close(fq.weight.grad, grad_out.T @ x.detach())  # STE: rounding treated as identity
    torch.testing.assert_close(fq.bias.grad, grad_out.sum(0))
    assert fq.weight is linear.weight  # the same Parameter, so optimisers and tying are unaffected


def test_convert_qat_matches_fake_quant_forward():
    model = Transformer(get_preset("tiny-llama")).eval()
    enable_qat(model, bits=4, group_size=32)
    assert isinstance(model.layers[0].mlp.up_proj, FakeQuantLinear)
    ids = torch.randint(0, 256, (1, 10))
    with torch.no_grad():
        fake = model(ids)
        convert_qat(model)
        real = model(ids)
    assert isinstance(model.layers[0].mlp.up_proj, Int4Linear) and model.quant_config.bits == 4
    torch.testing.assert_close(real, fake, rtol=0.05, atol=0.05)  # the kernels differ only by bf16 activations
