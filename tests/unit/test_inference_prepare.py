"""prepare_for_inference (fused q/k/v and gate/up projections, packed linears, fused CPU kernels) keeps what the
model computes: transformers' logits on Llama / Qwen2 (biases) / Qwen3 (QK norm), the paged engine's greedy tokens,
and models it only partly applies to (MoE, MLA, GeLU MLPs, wrapped linears)."""

import pytest
import torch
from torch import nn

from lmforge.engine.llm import LLM, EngineConfig
from lmforge.formats.loader import load
from lmforge.generation.decode_bench import bytes_read_per_token
from lmforge.generation.generate import decode
from lmforge.generation.sampling_params import SamplingParams
from lmforge.kernels import cpu_kernels
from lmforge.kernels.backend_table import Backend, detect_capability, linear_plan
from lmforge.model import Transformer, get_preset
from lmforge.model.inference import (
    Float32Head,
    FusedRMSNorm,
    FusedSwiGLU,
    InplaceRope,
    KernelLinear,
    SiluGatedKernelLinear,
    prepare_for_inference,
)
from lmforge.model.packed_linear import PackedLinear, packing_available
from tests.context_lm import assert_greedy_up_to_ties, assert_not_constant, context_model, naive_greedy
from tests.hf_models import tiny_hf_model

BF16_TIE = 0.15  # bf16 decoding picks tokens <= 0.031 below a full forward's argmax (6 seeds); a wrong position 9.3


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_prepared_model_matches_transformers(tmp_path, family):
    ref = tiny_hf_model(family, tie=False)
    ref.save_pretrained(tmp_path)
    model = load(tmp_path).model
    ids = torch.randint(0, ref.config.vocab_size, (2, 23))
    n = model.config.n_layers
    counts = prepare_for_inference(model)
    assert counts["fused_projections"] == 2 * n  # q/k/v and gate/up in every layer
    # the backend table's choice for this machine (tests/unit/test_backend_table.py checks every level); asked here,
    f32_backend, _ = linear_plan(torch.float32, detect_capability(), model.config.dim)  # not at import, so that
    kernels_built = cpu_kernels.cpu_ops() is not None  # collecting the tests builds nothing
    if f32_backend is Backend.KERNEL:  # q/k/v, o, gate/up and down per layer, and the LM head
        assert counts["kernel_linears"] == 4 * n + 1 and counts["packed_linears"] == 0
    else:
        assert counts["packed_linears"] == (4 * n + 1 if f32_backend is Backend.ONEDNN else 0)
    if kernels_built:  # RoPE and SiLU per layer, two norms per layer and the final one (+ Qwen3's q/k norms)
        assert counts["fused_kernels"] == 2 * n + 2 * n + 1 + (2 * n if family == "qwen3" else 0)
        assert sum(isinstance(m, FusedRMSNorm) for m in model.modules()) == 2 * n + 1 + (2 * n if family == "qwen3"
                                                                                       else 0)
    assert not any(hasattr(layer.attn, "q_proj") for layer in model.layers)
    with torch.inference_mode():
        ours = model(ids)
    with torch.no_grad():
        expected = ref(ids).logits
    assert (ours - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    not packing_available(torch.bfloat16), reason="this CPU has no native bf16 matmul (oneDNN packing)"))])
def test_prepared_model_in_the_paged_engine_matches_single_sequence_decoding(dtype):
    model = context_model(max_seq_len=256).to(dtype)
    prompts = [[(7 * i + j) % 250 + 1 for j in range(5 + 9 * i)] for i in range(5)]
    with torch.inference_mode():
        before = model(torch.tensor([prompts[-1]]))
    reference = [decode(model, p, max_new_tokens=12) for p in prompts]
    for tokens in reference:
        assert_not_constant(tokens)
    bytes_before = bytes_read_per_token(model)
    counts = prepare_for_inference(model)
    # a bf16 head no kernel took is held as a float32 copy (float32 logits): it reads twice its bf16 bytes
    backend, _ = linear_plan(dtype, detect_capability(), model.config.dim)
    no_bf16_kernel = dtype == torch.bfloat16 and backend is not Backend.KERNEL
    assert isinstance(model.lm_head, Float32Head) == no_bf16_kernel
    grown = model.config.vocab_size * model.config.dim * 2 if no_bf16_kernel else 0
    assert bytes_read_per_token(model) == bytes_before + grown  # what `bench decode` divides the bandwidth by
    if backend is Backend.KERNEL:
        assert counts["kernel_linears"] == 4 * model.config.n_layers + 1 and counts["packed_linears"] == 0
        assert sum(isinstance(m, KernelLinear) for m in model.modules()) == counts["kernel_linears"]
        assert sum(isinstance(m, SiluGatedKernelLinear) for m in model.modules()) == model.config.n_layers
    with torch.inference_mode():
        after = model(torch.tensor([prompts[-1]]))
    tol = 1e-4 if dtype == torch.float32 else 0.1  # bf16: the norms' sums in another order, packed matmuls
    assert (after - before).abs().max() <= tol
    decoded = [decode(model, p, max_new_tokens=12) for p in prompts]
    outs = LLM(model, None, EngineConfig(num_blocks=64, block_size=4)).generate(
        prompts, [SamplingParams(max_new_tokens=12)] * len(prompts))
    served = [o.output_ids for o in outs]
    if dtype == torch.float32:
        assert decoded == served == reference == [naive_greedy(model, p, 12) for p in prompts]
    else:  # bf16 rounding flips near-ties (logit gaps of 0.02 at logits near 4 here): each token must be the
        for prompt, a, b in zip(prompts, decoded, served, strict=True):  # argmax of a full forward, up to that
            assert_greedy_up_to_ties(model, prompt, a, tol=BF16_TIE)
            assert_greedy_up_to_ties(model, prompt, b, tol=BF16_TIE)


@pytest.mark.parametrize("preset", ["tiny-moe", "tiny-deepseek-v3", "tiny-bert", "tiny-gemma3"])
def test_models_it_partly_applies_to_keep_their_outputs(preset):
    torch.manual_seed(0)
    model = Transformer(get_preset(preset)).eval()
    ids = torch.randint(1, model.config.vocab_size, (2, 11))
    with torch.inference_mode():
        before = model(ids)
    prepare_for_inference(model)
    with torch.inference_mode():
        assert (model(ids) - before).abs().max() <= 1e-4


def test_without_kernels_only_projections_are_fused_and_wrapped_linears_are_left_alone(monkeypatch):
    torch.manual_seed(0)
    model = Transformer(get_preset("tiny-llama")).eval()
    ids = torch.randint(1, 256, (1, 9))
    with torch.inference_mode():
        before = model(ids)

    class Wrapped(nn.Module):  # e.g. a LoRA adapter around a linear: not fusable
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    model.layers[0].attn.q_proj = Wrapped(model.layers[0].attn.q_proj)
    model.layers[0].mlp.up_proj = Wrapped(model.layers[0].mlp.up_proj)
    monkeypatch.setenv(cpu_kernels.DISABLE_VAR, "0")
    cpu_kernels.cpu_ops.cache_clear()
    try:
        counts = prepare_for_inference(model)
    finally:
        cpu_kernels.cpu_ops.cache_clear()
    n = model.config.n_layers
    assert counts["fused_projections"] == 2 * (n - 1) and counts["fused_kernels"] == 0
    assert hasattr(model.layers[0].attn, "q_proj") and model.layers[0].attn.qkv_proj is None
    assert not isinstance(model.layers[0].mlp, FusedSwiGLU) and isinstance(model.layers[1].mlp, FusedSwiGLU)
    assert not any(isinstance(m, FusedRMSNorm) for m in model.modules())
    assert not any(isinstance(layer.attn.rope, InplaceRope) for layer in model.layers)
    with torch.inference_mode():
        assert (model(ids) - before).abs().max() <= 1e-4
    if linear_plan(torch.float32, detect_capability(kernels=False), 64)[0] is Backend.ONEDNN:  # AMD CPUs
        assert isinstance(model.layers[1].attn.qkv_proj, PackedLinear)
