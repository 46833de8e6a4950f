"""A quantized model run on lmforge's int8 / int4 kernels holds its weights once: after the first forward the packed
layout is the only copy (quant/int_kernels.py), and the saved format is rebuilt from it byte for byte."""

import pytest
import torch

from lmforge.formats.loader import load
from lmforge.formats.quant_io import save_quantized
from lmforge.formats.weights import load_weights_file
from lmforge.model import Transformer, get_preset
from lmforge.quant.int_linear import Int4Linear, Int8Linear, quantize_model

pytestmark = pytest.mark.usefixtures("one_thread")


def resident_bytes(module: torch.nn.Module, kinds=(torch.nn.Module,)) -> int:
    """Bytes of the distinct storages behind the parameters and buffers of `module`'s submodules of `kinds`."""
    storages = {}
    for sub in module.modules():
        if isinstance(sub, kinds):
            for t in [*sub.parameters(recurse=False), *sub.buffers(recurse=False)]:
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


@pytest.mark.parametrize("bits", [8, 4])
def test_a_quantized_model_holds_its_weights_once_and_saves_the_same_bytes(quant_layer_ops, tmp_path, bits):
    torch.manual_seed(0)
    model = quantize_model(Transformer(get_preset("tiny-llama")).eval(), bits=bits, group_size=32)
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    save_quantized(model, tmp_path / "before")
    saved = sum(t.nbytes for t in load_weights_file(tmp_path / "before" / "model.safetensors").values())
    quantized = (Int8Linear, Int4Linear)
    saved_quantized = resident_bytes(model, quantized)
    with torch.no_grad():
        out = model(ids)
    assert all(m.is_packed() and m.kernel_pack is not None for m in model.modules() if isinstance(m, quantized))
    assert resident_bytes(model) <= 1.05 * saved, (resident_bytes(model), saved)
    assert resident_bytes(model, quantized) <= 1.05 * saved_quantized
    save_quantized(model, tmp_path / "after")  # from the packed layout
    assert (tmp_path / "after" / "model.safetensors").read_bytes() == \
        (tmp_path / "before" / "model.safetensors").read_bytes()
    again = load(tmp_path / "after").model
    with torch.no_grad():
        assert torch.equal(again(ids), out)
        assert torch.equal(model(ids), out)  # taking the state dict left the packed layout in place


def test_reading_or_moving_a_packed_layer_restores_the_saved_layout(quant_layer_ops):
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 80, bias=True)
    x = torch.randn(3, 96).bfloat16()
    for layer in (Int8Linear.from_linear(linear), Int4Linear.from_linear(linear, 32)):
        dense = layer.dequantize()
        reference = layer(x)
        assert layer.is_packed() and "weight" not in dict(layer.named_buffers())
        assert torch.equal(layer.dequantize(), dense) and not layer.is_packed()  # unpacked exactly, one copy
        layer(x)
        layer.to(torch.float64)  # moving or casting goes through the saved layout
        assert not layer.is_packed() and layer.bias.dtype == torch.float64
        assert torch.equal(layer.dequantize(), dense)
        layer.bias.data = layer.bias.data.float()
        assert torch.equal(layer(x), reference) and layer.is_packed()
