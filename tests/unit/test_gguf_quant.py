"""GGUF Q4_0 / Q4_1 blocks mapped straight into Int4Linear: codes, scales and the kernel against gguf-py.

References: blocks made by gguf-py's own quantizer, gguf-py's dequantizer, codes recovered from its dequantized
values and the block headers (q = round((w - m) / d)), llama.cpp's Q/K row permutation, the float model.
"""

import gguf
import numpy as np
import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_file import GGUFTensor
from lmforge.formats.gguf_import import GGUFBlocks
from lmforge.formats.gguf_quant import dequantize_q4, q4_codes, q4_to_int4_linear
from lmforge.formats.loader import load
from lmforge.quant.int_linear import Int4Linear, Int8Linear, unpack_nibbles
from tests.unit.test_gguf_import import llamacpp_permute, tiny_model, write_gguf

Q = gguf.GGMLQuantizationType
HEADER = {"Q4_0": 2, "Q4_1": 4}


def synthetic(qtype: str, rows: int = 80, cols: int = 256, seed: int = 0) -> GGUFTensor:
    """A tensor quantized by gguf-py, wrapped as lmforge's reader exposes file tensors (raw bytes per row)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, cols)) * np.linspace(0.05, 2, cols) + rng.uniform(-1, 1, (rows, 1)))
    raw = gguf.quants.quantize(w.astype(np.float32), Q[qtype])
    return GGUFTensor("blk.0.attn_q.weight", (cols, rows), Q[qtype], raw)


def reference(tensor: GGUFTensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(gguf-py's dequantized weight, codes recovered from it, d, m) in the file's row order, d and m per input."""
    rows, cols = tensor.data.shape[0], tensor.shape[0]
    w = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(rows, cols)
    blocks = tensor.data.reshape(rows, cols // 32, -1)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32) if blocks.shape[-1] == 20 else -8 * d
    d, m = np.repeat(d, 32, axis=1), np.repeat(m, 32, axis=1)
    codes = np.rint((w - m) / d)
    assert np.abs((w - m) / d - codes).max() < 1e-3  # the values really lie on each block's grid
    return w, codes.astype(np.uint8), d, m


def bf16_bound(codes, d, m) -> np.ndarray:
    """|w_kernel - w_file| <= |q - 8| |d| 2^-8 + |m + 8d| 2^-8: the kernel reads s = bf16(d) and z = bf16(m + 8d),
    and round-to-nearest bf16 (8 significant bits) moves a value by at most 2^-8 of itself (+ float32 slack)."""
    return (np.abs(codes.astype(np.float32) - 8) * np.abs(d) + np.abs(m + 8 * d)) * 2**-8 + 1e-6


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
@pytest.mark.parametrize("heads", [None, 4])
def test_int4_linear_holds_the_files_codes_and_scales(qtype, heads):
    tensor = synthetic(qtype)
    w, codes, d, m = reference(tensor)  # in the file's row order
    module = q4_to_int4_linear(GGUFBlocks(tensor, heads))
    got_codes, got_w = unpack_nibbles(module.weight).numpy(), module.dequantize().numpy()
    if heads:  # the module holds Q/K rows un-permuted: llama.cpp's permutation must give the file's rows back
        assert not np.array_equal(got_codes, codes)
        got_codes, got_w = llamacpp_permute(got_codes, heads), llamacpp_permute(got_w, heads)
    assert isinstance(module, Int4Linear) and module.group_size == 32
    assert module.scales_and_zeros.dtype == torch.bfloat16
    np.testing.assert_array_equal(got_codes, codes)
    err = np.abs(got_w - w)
    assert (err <= bf16_bound(codes, d, m)).all(), err.max()
    if qtype == "Q4_0":  # z = m + 8d = 0 exactly: only the scale is rounded
        assert module.scales_and_zeros[..., 1].abs().max() == 0


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
def test_kernel_reads_scales_and_zeros_as_dequantize_does(qtype):
    """The int4 kernel on the mapped blocks (Q4_0: negative scales) equals x @ dequantize().T, and that stays
    close to x @ w_file.T; tolerances: bf16 output rounding (2^-8 relative) of sums over 256 products."""
    tensor = synthetic(qtype, seed=1)
    w = reference(tensor)[0]
    module = q4_to_int4_linear(GGUFBlocks(tensor, None))
    if qtype == "Q4_0":
        assert (module.scales_and_zeros[..., 0] < 0).any()
    x = torch.randn(5, w.shape[1])
    y = module(x).double()
    exact = x.bfloat16().double() @ module.dequantize().double().T
    scale = exact.abs().max().item()
    torch.testing.assert_close(y, exact, rtol=0, atol=2**-6 * scale)
    file_exact = x.bfloat16().double() @ torch.from_numpy(w).double().T
    torch.testing.assert_close(y, file_exact, rtol=0, atol=2**-5 * scale)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
def test_dequantize_q4_equals_gguf_py(qtype):
    tensor = synthetic(qtype, seed=2)
    w = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    assert np.array_equal(dequantize_q4(GGUFBlocks(tensor, None)).numpy(), w)
    codes, _, _ = q4_codes(tensor)
    assert codes.dtype == torch.uint8 and codes.shape == w.shape


def test_q8_0_is_refused():
    raw = gguf.quants.quantize(np.ones((4, 64), np.float32), Q.Q8_0)
    with pytest.raises(LmforgeError, match="only Q4_0 and Q4_1"):
        q4_codes(GGUFTensor("t", (64, 4), Q.Q8_0, raw))


@pytest.mark.parametrize(("arch", "qtype"), [("llama", "Q4_0"), ("llama", "Q4_1"), ("qwen2", "Q4_1")])
def test_load_gguf_int4_maps_every_projection(tmp_path, arch, qtype):
    """Untied output.weight in Q4: lm_head stays int8 (head_bits 8), like quantize_model; the Q4 embedding is float.
    qwen2: q/k/v biases (F32 in the file) stay on the int4 layers."""
    model = tiny_model(arch, tied=False)
    write_gguf(tmp_path / "m.gguf", model, qtype, arch=arch)
    direct = load(tmp_path / "m.gguf", gguf_int4=True)
    plain = load(tmp_path / "m.gguf")  # gguf-py's dequantization, RoPE rows un-permuted
    floats = dict(plain.model.named_modules())
    projections = [(n, m) for n, m in direct.model.named_modules() if n.endswith("_proj")]
    assert len(projections) == 2 * 7
    for name, module in projections:
        assert isinstance(module, Int4Linear), name
        assert (module.bias is None) == (floats[name].bias is None), name
        if module.bias is not None:
            assert torch.equal(module.bias, floats[name].bias), name
        w = floats[name].weight.detach()
        # bf16_bound with |q - 8| |d| <= 8 (2 max|w|) / 15 and |z| <= max|w| (z is a grid value of the block)
        err = (module.dequantize() - w).abs().max().item()
        assert err <= w.abs().max().item() * 2**-8 * 4, (name, err)
    assert isinstance(direct.model.lm_head, Int8Linear)
    torch.testing.assert_close(direct.model.lm_head.dequantize(),
                               Int8Linear.from_linear(floats["lm_head"]).dequantize())
    assert torch.equal(direct.model.embed.weight, plain.model.embed.weight)
    ids = torch.randint(0, 265, (2, 12))
    with torch.inference_mode():
        a, b = direct.model(ids), plain.model(ids)
    assert (a - b).abs().max() < 0.05 * b.abs().max()
    direct.save(tmp_path / "int4")  # the quantized directory format reads it back unchanged
    with torch.inference_mode():
        assert torch.equal(load(tmp_path / "int4").model(ids), a)


def test_gguf_int4_needs_a_gguf_file(tmp_path):
    with pytest.raises(LmforgeError, match="needs a .gguf file"):
        load(tmp_path, gguf_int4=True)


def test_quantize_cli_from_gguf_blocks(tmp_path):
    from tests.cli_util import assert_user_error, run_cli

    write_gguf(tmp_path / "m.gguf", tiny_model("llama"), "Q4_1")
    src = str(tmp_path / "m.gguf")
    result = run_cli("quantize", src, "--bits", "4", "--from-gguf-blocks", "-o", str(tmp_path / "q"))
    assert result.returncode == 0, result.stderr
    assert "Q4 layers from the GGUF blocks" in result.stdout
    saved, direct = load(tmp_path / "q"), load(tmp_path / "m.gguf", gguf_int4=True)
    for (name, a), (_, b) in zip(saved.model.named_modules(), direct.model.named_modules(), strict=True):
        if isinstance(b, Int4Linear):
            assert isinstance(a, Int4Linear) and torch.equal(a.weight, b.weight), name
            assert torch.equal(a.scales_and_zeros, b.scales_and_zeros), name
    assert_user_error(run_cli("quantize", src, "--bits", "8", "--from-gguf-blocks", "-o", str(tmp_path / "q8")),
                      "--from-gguf-blocks needs", "--bits 8")
