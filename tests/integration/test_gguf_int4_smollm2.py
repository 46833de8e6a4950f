"""SmolLM2-135M's Q4_1 layers mapped straight into Int4Linear vs dequantize + re-quantize (`quantize_model`).

References: gguf-py's own reader and dequantizer (the file's exact weights and codes), llama.cpp's Q/K permutation,
and the held-out perplexity text and helper of test_quant_quality.py (issue 7: int4 at most +10% over fp32).
"""

import copy
import time

import gguf
import numpy as np
import pytest
import torch

from lmforge.common.paths import embedded_model_path
from lmforge.formats.gguf_file import GGUFTensor
from lmforge.quant.int_linear import Int4Linear, quantize_model, unpack_nibbles
from tests.integration.test_quant_quality import TEXT, logits_of, perplexity
from tests.unit.test_gguf_import import llamacpp_permute
from tests.unit.test_gguf_quant import bf16_bound, reference

pytestmark = pytest.mark.slow
HEADS = {"q_proj": 9, "k_proj": 3}  # llama.cpp permuted these rows for its RoPE
SAMPLED = {"blk.0.attn_q.weight": "layers.0.attn.q_proj", "blk.0.attn_k.weight": "layers.0.attn.k_proj",
           "blk.0.attn_v.weight": "layers.0.attn.v_proj", "blk.14.attn_output.weight": "layers.14.attn.o_proj",
           "blk.7.ffn_gate.weight": "layers.7.mlp.gate_proj", "blk.29.ffn_down.weight": "layers.29.mlp.down_proj",
           "blk.29.attn_q.weight": "layers.29.attn.q_proj"}  # fmt: skip


@pytest.fixture(scope="module")
def models():
    from lmforge import load

    fp32 = load("smollm2-135m")
    direct = load("smollm2-135m", gguf_int4=True)
    requantized = quantize_model(copy.deepcopy(fp32.model), bits=4, group_size=32)
    return fp32, direct, requantized


def test_codes_and_weights_are_the_files(models):
    _, direct, _ = models
    reader = gguf.GGUFReader(embedded_model_path())  # gguf-py's reader: independent of lmforge's
    tensors = {t.name: t for t in reader.tensors}
    modules = dict(direct.model.named_modules())
    for gguf_name, name in SAMPLED.items():
        t = tensors[gguf_name]
        assert t.tensor_type == gguf.GGMLQuantizationType.Q4_1
        w, codes, d, m = reference(GGUFTensor(gguf_name, tuple(int(x) for x in t.shape), t.tensor_type, t.data))
        module = modules[name]
        assert isinstance(module, Int4Linear) and module.group_size == 32
        got_codes, got_w = unpack_nibbles(module.weight).numpy(), module.dequantize().numpy()
        if heads := HEADS.get(name.rsplit(".", 1)[1]):
            got_codes, got_w = llamacpp_permute(got_codes, heads), llamacpp_permute(got_w, heads)
        np.testing.assert_array_equal(got_codes, codes, err_msg=name)
        assert (np.abs(got_w - w) <= bf16_bound(codes, d, m)).all(), name


def weight_errors(model, fp32) -> tuple[float, float]:
    """(mean, max) |w_int4 - w_file| over every int4 layer; the fp32 model holds gguf-py's dequantized weights."""
    floats, total, count, worst = dict(fp32.named_modules()), 0.0, 0, 0.0
    for name, module in model.named_modules():
        if isinstance(module, Int4Linear):
            err = (module.dequantize() - floats[name].weight).abs()
            total, count, worst = total + err.sum().item(), count + err.numel(), max(worst, err.max().item())
    return total / count, worst


def test_direct_mapping_is_no_worse_than_requantizing(models):
    fp32, direct, requantized = models
    ids = torch.tensor([fp32.tokenizer.encode(TEXT)])
    base, ppl_direct, ppl_requant = (perplexity(logits_of(m, ids), ids) for m in (fp32.model, direct.model,
                                                                                  requantized))
    err_direct, err_requant = weight_errors(direct.model, fp32.model), weight_errors(requantized, fp32.model)
    print(f"\n|dw| vs the file's weights: direct mean {err_direct[0]:.3e} max {err_direct[1]:.3e}; "
          f"re-quantized mean {err_requant[0]:.3e} max {err_requant[1]:.3e}")
    print(f"held-out perplexity over {ids.shape[1]} tokens: fp32 {base:.3f}; direct {ppl_direct:.3f} "
          f"({100 * (ppl_direct / base - 1):+.2f}%); re-quantized {ppl_requant:.3f} "
          f"({100 * (ppl_requant / base - 1):+.2f}%)")
    assert err_direct[0] <= err_requant[0]
    assert ppl_direct <= ppl_requant * 1.005
    assert ppl_direct / base - 1 <= 0.10


def test_load_time(models):
    from lmforge import load

    start = time.perf_counter()
    direct = load("smollm2-135m", gguf_int4=True)
    t_direct = time.perf_counter() - start
    start = time.perf_counter()
    quantize_model(load("smollm2-135m").model, bits=4, group_size=32)
    t_requant = time.perf_counter() - start
    print(f"\nload time: gguf_int4=True {t_direct:.2f} s; dequantize + quantize_model {t_requant:.2f} s")
    assert direct.model.quant_config.bits == 4 and t_direct > 0
