"""Int8Linear / Int4Linear on lmforge's int8 / int4 kernels once the kernels are loaded: the same outputs as
PyTorch's kernels (the pure path) within a bf16 unit, float32 logits, the saved format unchanged and the packing
rebuilt when a state dict is loaded; with LMFORGE_CPU_KERNELS=0 the layers keep PyTorch's ops."""

import pytest
import torch
from torch import nn

from lmforge.kernels import cpu_kernels, quant_linear
from lmforge.quant import int_kernels, int_linear
from lmforge.quant.int_linear import Int4Linear, Int8Linear


def _layers(bias):
    torch.manual_seed(0)
    linear = nn.Linear(96, 80, bias=bias)
    return Int8Linear.from_linear(linear), Int4Linear.from_linear(linear, 32)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.usefixtures("weight_only_activations")  # int8 activations: test_int8_activations.py
def test_quantized_layers_run_on_the_kernels_and_match_pytorchs(quant_layer_ops, monkeypatch, bias, dtype):
    x = torch.randn(2, 3, 96, dtype=dtype)
    for layer in _layers(bias):
        out = layer(x)
        assert layer.kernel_pack is not None and out.dtype == dtype and out.shape == (2, 3, 80)
        logits = layer.float_logits(x)
        with monkeypatch.context() as patch:  # the pure path: PyTorch's int8 / int4 ops
            patch.setattr(int_linear, "quant_linear_ops", lambda: None)
            patch.setattr(int_kernels, "quant_linear_ops", lambda: None)
            layer.kernel_pack = None
            ref, ref_logits = layer(x), layer.float_logits(x)
            assert layer.kernel_pack is None
        torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2 ** -7)
        torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)


def test_saved_format_unchanged_and_loading_repacks(quant_layer_ops):
    for layer, other in zip(_layers(False), _layers(True), strict=True):
        x = torch.randn(1, 96).bfloat16()
        before = {k: (v.dtype, v.shape) for k, v in layer.state_dict().items()}
        layer(x)  # packs for the kernel
        assert {k: (v.dtype, v.shape) for k, v in layer.state_dict().items()} == before
        other.weight.copy_(other.weight.flip(0))  # other codes, same shapes
        state = {k: v for k, v in other.state_dict().items() if k != "bias"}
        layer.load_state_dict(state)
        assert layer.kernel_pack is None
        exact = x.double() @ layer.dequantize().double().T
        assert ((layer(x).double() - exact).abs() <= exact.abs() * 2 ** -7 + 1e-2).all()


def test_without_kernels_the_layers_keep_pytorchs_ops(quant_layer_ops, monkeypatch):
    linear = nn.Linear(64, 48)
    x = torch.randn(2, 64).bfloat16()
    try:
        with monkeypatch.context() as patch:
            patch.setenv("LMFORGE_CPU_KERNELS", "0")
            cpu_kernels.cpu_ops.cache_clear()  # as in a process started with the variable set
            assert cpu_kernels.cpu_ops() is None and quant_linear.quant_linear_ops() is None
            assert quant_linear.isa() == "none"
            for layer in (Int8Linear.from_linear(linear), Int4Linear.from_linear(linear, 32)):
                exact = x.double() @ layer.dequantize().double().T + linear.bias.double()
                assert ((layer(x).double() - exact).abs() <= exact.abs() * 2 ** -7 + 1e-2).all()
                assert layer.kernel_pack is None
    finally:
        cpu_kernels.cpu_ops.cache_clear()
    assert cpu_kernels.cpu_ops() is not None  # loaded again for the other tests


def test_layers_keep_pytorchs_ops_on_the_avx2_path(quant_layer_ops):
    """At AVX2 width the kernels measured slower than PyTorch's (quant_linear.py): the layers do not use them there."""
    layer = _layers(False)[1]
    try:
        assert quant_linear.set_isa("avx2") == "avx2" and quant_linear.quant_linear_ops() is None
        layer(torch.randn(1, 96).bfloat16())
        assert layer.kernel_pack is None
    finally:
        quant_linear.set_isa("default")
    layer(torch.randn(1, 96).bfloat16())
    assert layer.kernel_pack is not None
