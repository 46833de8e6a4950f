"""prepare_for_inference fuses quantized q/k/v and gate/up (Int8Linear / Int4Linear) into one packed layer each, as it
does float ones: the same outputs (each output row's sum runs in the same order: bit for bit per layer), the same
greedy tokens, and a decode step of 2 + 2 quantized calls per block fewer."""

import pytest
import torch
from torch import nn

from lmforge.model.inference import FusedSwiGLU, prepare_for_inference
from lmforge.quant.int_linear import Int4Linear, Int8Linear, quantize_model
from tests.context_lm import assert_context_dependent, context_model, naive_greedy

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("bias", [False, True])
def test_concat_outputs_computes_the_layers_side_by_side(quant_layer_ops, bias):
    torch.manual_seed(0)
    x = torch.randn(5, 64).bfloat16()
    linears = [nn.Linear(64, n, bias=bias) for n in (64, 32, 32)]
    for make in (Int8Linear.from_linear, lambda m: Int4Linear.from_linear(m, 32)):
        layers = [make(m) for m in linears]
        expected = torch.cat([layer(x) for layer in layers], dim=-1)  # packed: concat_outputs reads the packed copies
        fused = type(layers[0]).concat_outputs(layers)
        assert torch.equal(fused(x), expected)
        assert torch.equal(fused.float_logits(x), torch.cat([layer.float_logits(x) for layer in layers], dim=-1))
    mixed = [Int8Linear.from_linear(linears[0]), Int4Linear.from_linear(linears[1], 32)]
    assert Int8Linear.concat_outputs(mixed) is None
    groups = [Int4Linear.from_linear(m, g) for m, g in zip(linears, (32, 64, 32), strict=True)]
    assert Int4Linear.concat_outputs(groups) is None  # group sizes differ


@pytest.mark.parametrize("bits", [8, 4])
def test_prepared_quantized_model_fuses_and_keeps_logits_and_tokens(quant_layer_ops, bits):
    model = quantize_model(context_model().to(torch.bfloat16), bits=bits, group_size=32)
    prompt = [5, 17, 42, 9, 101, 3]
    ids = torch.tensor([prompt])
    with torch.no_grad():
        ref = model(ids).float()
    ref_tokens = naive_greedy(model, prompt, 12)
    assert_context_dependent(model, prompt)
    counts = prepare_for_inference(model)
    assert counts["fused_projections"] == 2 * model.config.n_layers
    for block in model.layers:
        assert type(block.attn.qkv_proj) is (Int8Linear if bits == 8 else Int4Linear)
        assert not hasattr(block.attn, "q_proj")
        assert isinstance(block.mlp, FusedSwiGLU) and type(block.mlp.gate_up_proj) is type(block.attn.qkv_proj)
    with torch.no_grad():
        out = model(ids).float()
    # measured on a Zen 5 (AVX-512): 0.0 (the logits bit for bit, int8 and int4). The fused projections are exact;
    # the bound allows prepare's RMSNorm kernel its one bf16 unit (model/inference.py) on another CPU
    err = (out - ref).abs().max().item()
    assert err <= 2 ** -7 * ref.abs().max().item(), err
    assert naive_greedy(model, prompt, 12) == ref_tokens
