"""A prepared model's batch-1 decode step: the attention runs in one kernel call per layer (cached_attention) and the
residual add before the MLP's norm in one pass with it (add_rms_norm); the greedy tokens are those of the unprepared
model (float32: also of a full forward per token; bfloat16: up to near-ties, as the kernel's float32 attention sums
differ from SDPA's), and a step makes a handful of operator calls per layer (the eager step ~30), none once the whole
step runs in one call (decode_stack.py): counted with the torch profiler, which is deterministic where timings are
not."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from lmforge.generation.generate import decode
from lmforge.model.attention_kernel import CachedAttentionKernel
from lmforge.model.inference import prepare_for_inference
from tests.context_lm import assert_context_dependent, assert_greedy_up_to_ties, context_model, naive_greedy

PROMPT = [5, 17, 42, 9, 101, 3, 77]
BF16_TIE = 0.15  # as tests/unit/test_inference_prepare.py: bf16 decoding picks tokens <= 0.031 below the argmax


pytestmark = pytest.mark.usefixtures("one_thread")


def ops_per_step(model) -> float:
    """Top-level operator calls of one decode step: a decode of 7 tokens less one of 1 token (the prefill), over 6
    (after a first decode: the fused step's RoPE table is built once)."""
    decode(model, PROMPT, max_new_tokens=2)

    def count(n):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            decode(model, PROMPT, max_new_tokens=n)
        return sum(e.cpu_parent is None for e in prof.events())

    return (count(7) - count(1)) / 6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prepared_decode_attends_in_one_kernel_call_and_keeps_the_tokens(ops, dtype):
    model = context_model(max_seq_len=64).to(dtype)
    reference = decode(model, PROMPT, max_new_tokens=24)
    if dtype == torch.float32:
        assert reference == naive_greedy(model, PROMPT, 24)
        assert_context_dependent(model, PROMPT)
    counts = prepare_for_inference(model)
    n = model.config.n_layers
    assert counts["fused_attention"] == n
    model.fused_decode = None  # layer by layer, as a quantized model decodes (the whole step: test_decode_stack.py)
    calls = []
    for layer in model.layers:
        assert isinstance(layer.attn.fused, CachedAttentionKernel)
        kernel = layer.attn.fused.kernel
        layer.attn.fused.kernel = lambda *args, kernel=kernel: calls.append(args[5]) or kernel(*args)
    tokens = decode(model, PROMPT, max_new_tokens=24)
    assert calls == list(range(n)) * 23  # every layer of the 23 steps after the prompt's (SDPA runs the prompt)
    if dtype == torch.float32:
        assert tokens == reference
    else:  # bf16 rounding flips near-ties (the attention sums in float32 where SDPA rounds to bf16)
        assert_greedy_up_to_ties(model, PROMPT, tokens, tol=BF16_TIE)


def test_a_decode_step_makes_a_handful_of_operator_calls(ops):
    """Per layer (the difference between a 4- and a 2-layer model) and in all. The whole step in one kernel call
    (decode_stack.py): no operator call per layer, 11 per step (the head, the sampler's finiteness check and argmax,
    the loop's glue; the stack's call is a custom class's method, not an operator), where the layer-by-layer step
    makes 48 on 2 layers. Layer by layer (as quantized models decode): norm, q/k/v, attention, o, add + norm,
    gate/up, down, add: 8 per layer (30 before the attention kernel and the fused add + norm; 9 on AVX2 CPUs, where
    SwiGLU's gate/up is oneDNN's and silu_mul a second call)."""
    steps, layered = {}, {}
    for n_layers in (2, 4):
        model = context_model(max_seq_len=64, n_layers=n_layers)
        prepare_for_inference(model)
        stacked = model.fused_decode is not None  # the one-call step needs AVX-512-wide kernels (not on AVX2 CPUs)
        steps[n_layers] = ops_per_step(model)
        model.fused_decode = None
        layered[n_layers] = ops_per_step(model)
    if stacked:
        assert steps[4] == steps[2] <= 11
    per_layer = 8 if model.layers[0].mlp.gated else 9  # AVX2: gate/up on oneDNN, then silu_mul (no one-pass kernel)
    assert (layered[4] - layered[2]) / 2 <= per_layer, layered
