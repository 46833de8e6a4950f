"""Int8 activations (csrc/int8_dot.h, AVX512-VNNI): Int8Linear / Int4Linear quantize each input row per block of 32
channels and multiply int8 by int8 in registers. The integer dot products are exact (integer inputs: results equal to
the int64 product bit for bit), the rest matches a PyTorch reference of the same math (int8_reference.py) within
float32 rounding of the sums; the packed int8 layout saves the same bytes; LMFORGE_INT8_ACTIVATIONS=0 keeps the
weight-only path (the kernels as before)."""

import copy

import pytest
import torch
from torch import nn

from lmforge.generation.generate import decode
from lmforge.kernels import quant_linear
from lmforge.model.inference import prepare_for_inference
from lmforge.quant.int_linear import (
    Int4Linear,
    Int8Linear,
    pack_nibbles,
    quantize_int4,
    quantize_int8,
    quantize_model,
    to_kernel_scales_and_zeros,
)
from tests.context_lm import assert_greedy_up_to_ties, context_model
from tests.unit.kernels import int8_reference as ref

ROWS = (0, 1, 2, 3, 7, 13)  # a pass holds 6 rows; 1 and 2 rows run two chains of dot products


@pytest.fixture
def vnni(quant_layer_ops):
    if not quant_linear.vnni():
        pytest.skip("this build has no AVX512-VNNI path (the layers keep bf16 activations)")
    previous = quant_linear.set_int8_activations(True)
    yield quant_layer_ops
    quant_linear.set_int8_activations(previous)


def _integer_rows(rows, K):
    """Integer inputs with 127 in every block of 32: their int8 codes are themselves (scale 1)."""
    x = torch.randint(-127, 128, (rows, K)).float()
    x.view(rows, -1, 32)[..., 5] = 127
    return x.bfloat16()


def test_dot_products_are_exact(vnni):
    """Every partial sum an integer below 2^24 (K 576, |x|, |q| <= 127; unit scales): exact in float32, so the
    kernels' results equal the int64 product bit for bit, int8 (unsigned q + 128 times x, less 128 sum(x)) and int4
    (the nibbles' channel order, the zero term from the codes' sums)."""
    K = 576
    x = _integer_rows(5, K)
    q8 = torch.randint(-127, 128, (96, K), dtype=torch.int8)
    y8 = vnni.linear_int8(x, vnni.pack_linear_int8_vnni(q8), torch.ones(96), None, 96, True)
    assert torch.equal(y8.long(), x.long() @ q8.long().T)
    q4 = torch.randint(0, 16, (64, K), dtype=torch.uint8)
    sz = torch.zeros(K // 64, 64, 2, dtype=torch.bfloat16)
    sz[..., 0] = 1  # w = (q - 8) * 1 + 0
    y4 = vnni.linear_int4(x, vnni.pack_linear_int4(pack_nibbles(q4)), vnni.pack_int4_scales(sz), None, 64, True, True)
    assert torch.equal(y4.long(), x.long() @ (q4.long() - 8).T)


@pytest.mark.parametrize("out_features,in_features", [(80, 48), (33, 100), (1, 7), (64, 576)])
def test_int8_kernel_equals_the_reference(vnni, out_features, in_features):
    """Measured (Zen 5, 2026-12-07): float32 outputs within 3e-7 of the largest output; bound: float32 rounding of
    one multiply-add per block of 32 and the scale, relative to the sum of the terms' magnitudes."""
    torch.manual_seed(out_features)
    q, scales = quantize_int8(torch.randn(out_features, in_features))
    packed = vnni.pack_linear_int8_vnni(q)
    blocks = -(-in_features // 32)
    for rows in ROWS:
        b = torch.randn(out_features) if rows % 2 else None
        x = torch.randn(rows, in_features).bfloat16()
        exact = ref.int8_linear(x, q, scales, b)
        magnitude = ref.int8_linear(x, q, scales, magnitude=True) + (0 if b is None else b.abs())
        bound = (blocks + 3) * 2 ** -24 * magnitude
        out32 = vnni.linear_int8(x, packed, scales, b, out_features, True)
        assert out32.shape == (rows, out_features) and ((out32.double() - exact).abs() <= bound + 1e-30).all()
        out = vnni.linear_int8(x, packed, scales, b, out_features)
        assert out.dtype == torch.bfloat16 and ((out.double() - exact).abs() <= exact.abs() * 2 ** -8 + bound).all()


@pytest.mark.parametrize("out_features,in_features,group_size", [(80, 64, 32), (33, 96, 32), (64, 384, 128),
                                                                 (1, 256, 256)])
def test_int4_kernel_equals_the_reference(vnni, out_features, in_features, group_size):
    torch.manual_seed(out_features)
    q, scales, zeros = quantize_int4(torch.randn(out_features, in_features), group_size)
    sz = to_kernel_scales_and_zeros(scales, zeros)
    codes, packed_sz = vnni.pack_linear_int4(pack_nibbles(q)), vnni.pack_int4_scales(sz)
    s, z = sz[..., 0].T, sz[..., 1].T  # the bf16 values the kernel reads
    blocks = in_features // 32
    for rows in ROWS:
        b = torch.randn(out_features) if rows % 2 else None
        x = torch.randn(rows, in_features).bfloat16()
        exact = ref.int4_linear(x, q, s, z, group_size, b)
        bound = (blocks + 4) * 2 ** -24 * (ref.int4_linear(x, q, s, z, group_size, magnitude=True)
                                          + (0 if b is None else b.abs()))
        out32 = vnni.linear_int4(x, codes, packed_sz, b, out_features, True, True)
        assert ((out32.double() - exact).abs() <= bound + 1e-30).all()
        weight_only = vnni.linear_int4(x, codes, packed_sz, b, out_features, True, False)
        assert rows == 0 or not torch.equal(out32, weight_only)  # the flag picks the path


def test_layers_run_int8_activations_and_save_the_same_bytes(vnni):
    torch.manual_seed(0)
    linear = nn.Linear(100, 33)
    layer8 = Int8Linear.from_linear(linear)
    layer4 = Int4Linear.from_linear(nn.Linear(96, 33), 32)
    saved = {id(m): {k: v.clone() for k, v in m.state_dict().items()} for m in (layer8, layer4)}
    x = torch.randn(2, 3, 100)
    out = layer8(x)
    assert layer8.kernel_codes.shape == (2, 32, 32, 4)  # the int8 x int8 layout, K padded to 128
    flat = x.reshape(-1, 100).bfloat16()
    exact = ref.int8_linear(flat, saved[id(layer8)]["weight"], saved[id(layer8)]["scales"], linear.bias.detach())
    torch.testing.assert_close(out.reshape(-1, 33).double(), exact, rtol=2e-6, atol=2e-6)  # float32 caller
    layer4(torch.randn(4, 96).bfloat16())
    for m in (layer8, layer4):
        assert m.is_packed()
        now = m.state_dict()
        assert now.keys() == saved[id(m)].keys() and all(torch.equal(now[k], v) for k, v in saved[id(m)].items())
    quant_linear.set_int8_activations(False)  # LMFORGE_INT8_ACTIVATIONS=0: the weight-only layout and path
    weight_only = Int8Linear.from_linear(linear)
    y = weight_only(x.bfloat16())
    assert weight_only.kernel_codes.shape == (2, 100, 32)
    codes = vnni.pack_linear_int8(weight_only.weight)
    assert torch.equal(y, vnni.linear_int8(x.bfloat16(), codes, weight_only.scales.float(), linear.bias, 33))


@pytest.mark.parametrize("bits", [8, 4])
def test_tiny_model_decodes_with_int8_activations(vnni, bits):
    """Greedy tokens of a prepared quantized model, each the argmax of its own full forward up to near-ties (decode
    and full forward run the same per-row math in the linears); logits near the weight-only model's, not equal."""
    model = quantize_model(context_model().to(torch.bfloat16), bits=bits, group_size=32)
    twin = copy.deepcopy(model)
    prepare_for_inference(model)
    prompt = [5, 17, 42, 9, 101, 3]
    tokens = decode(model, prompt, 16)
    assert len(set(tokens)) >= 3
    assert_greedy_up_to_ties(model, prompt, tokens, tol=0.15)  # as bf16 decoding (test_decode_step.py)
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).float()
        quant_linear.set_int8_activations(False)  # (int4 layers follow at once: model's too from here)
        prepare_for_inference(twin)
        weight_only = twin(torch.tensor([prompt])).float()
    # measured (Zen 5): int8 0.65, int4 0.69 against logits up to 7.7 (this model's std-0.3 weights amplify any error)
    err = (logits - weight_only).abs().max().item()
    assert 0 < err <= 0.2 * weight_only.abs().max().item(), err
    assert (logits.argmax(-1) == weight_only.argmax(-1)).float().mean() >= 0.5


def test_the_environment_variable_turns_int8_activations_off(capsys):
    env = quant_linear.INT8_ACTIVATIONS_ENV
    assert not any(quant_linear.int8_activations_requested({env: v}) for v in ("0", "false", " Off ", "no"))
    assert all(quant_linear.int8_activations_requested({env: v}) for v in ("1", "true", "ON", "yes"))
    assert quant_linear.int8_activations_requested({}) and capsys.readouterr().err == ""
    assert quant_linear.int8_activations_requested({env: "fasle"})  # a typo keeps the default, and says so
    assert "LMFORGE_INT8_ACTIVATIONS='fasle' is none of" in capsys.readouterr().err


def test_threads_split_the_outputs_without_changing_them(vnni):
    """A 3072 x 576 layer (1.8 MB int8, 1.1 MB int4) splits over threads at half a megabyte each: the same bits."""
    torch.manual_seed(1)
    q, scales = quantize_int8(torch.randn(3072, 576))
    q4, s4, z4 = quantize_int4(torch.randn(3072, 576), 32)
    p8 = vnni.pack_linear_int8_vnni(q)
    p4 = vnni.pack_linear_int4(pack_nibbles(q4)), vnni.pack_int4_scales(to_kernel_scales_and_zeros(s4, z4))
    x = torch.randn(5, 576).bfloat16()
    threads, out = torch.get_num_threads(), {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out[n] = vnni.linear_int8(x, p8, scales, None, 3072), vnni.linear_int4(x, *p4, None, 3072, False, True)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(out[1], out[2], strict=True))
