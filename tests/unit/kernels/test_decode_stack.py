"""A prepared model's whole batch-1 decode step in one kernel call (model/decode_stack.py, csrc/decode_stack.cpp):
every step's logits are those of the layer-by-layer prepared step bit for bit (float32 and bfloat16, with and without
q/k/v biases, past the first RoPE table), float32's greedy tokens those of the unprepared model, and the calls it does
not take (a batch of two) run the layers."""

import pytest
import torch

from lmforge.generation.cache import new_kv_cache
from lmforge.generation.generate import decode, generate
from lmforge.generation.step import decode_step, prefill
from lmforge.model.decode_stack import MIN_TABLE
from lmforge.model.inference import prepare_for_inference
from lmforge.model.layer_inputs import rope_tables
from tests.context_lm import assert_not_constant, context_model

PROMPT = [5, 17, 42, 9, 101, 3, 77]

pytestmark = pytest.mark.usefixtures("one_thread")


def prepared(request, preset: str, dtype: torch.dtype, **overrides):
    """(the unprepared model, the prepared one); skips where this CPU has no kernel linear for the dtype."""
    request.getfixturevalue("bf16_ops" if dtype == torch.bfloat16 else "f32_ops")
    overrides = {"max_seq_len": 64, **overrides}
    model = context_model(preset, **overrides).to(dtype)
    reference = context_model(preset, **overrides).to(dtype)
    assert prepare_for_inference(model)["fused_decode"] == 1
    return reference, model


def counted(model) -> list[bool]:
    """Record, for each hidden_states call, whether the stack took it."""
    stack, calls = model.fused_decode, []

    def fused(input_ids, backend):
        x = stack(input_ids, backend)
        calls.append(x is not None)
        return x

    model.fused_decode = fused
    return calls


@torch.inference_mode()
def step_logits(model, tokens: list[int], start: int = 0) -> torch.Tensor:
    """Logits of the prompt's last position and of each decode step feeding `tokens`, on a fresh cache whose first
    `start` positions hold (zero) entries."""
    cache = new_kv_cache(model, 1, max_len=start + len(PROMPT) + len(tokens) + 1)
    cache.length = start
    out = [prefill(model, torch.tensor([PROMPT]), cache)]
    out += [decode_step(model, torch.tensor([t]), cache) for t in tokens]
    return torch.cat(out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2"])  # qwen2: q/k/v biases
def test_the_stack_runs_each_decode_step_as_the_layers_do(request, preset, dtype):
    reference, model = prepared(request, preset, dtype)
    calls = counted(model)
    tokens = decode(model, PROMPT, max_new_tokens=16)
    assert calls == [False] + [True] * 15  # the prompt runs the layers, every step after it the stack
    assert_not_constant(tokens)
    if dtype == torch.float32:
        assert tokens == decode(reference, PROMPT, max_new_tokens=16)
    fused = step_logits(model, tokens)
    model.fused_decode = None
    assert decode(model, PROMPT, max_new_tokens=16) == tokens
    assert torch.equal(fused, step_logits(model, tokens))


def test_positions_past_the_first_rope_table_and_the_table_rows(request):
    _, model = prepared(request, "tiny-llama", torch.float32, max_seq_len=1024)
    stack = model.fused_decode
    start = MIN_TABLE + 40  # the second table: 512 positions
    fused = step_logits(model, [3, 8, 1], start=start)
    assert len(stack.cos) == 2 * MIN_TABLE
    for p in (0, MIN_TABLE - 1, MIN_TABLE, start, 2 * MIN_TABLE - 1):
        cos, sin = rope_tables(model.config, torch.tensor([[p]]), torch.float32, local=False)
        assert torch.equal(stack.cos[p], cos[0, 0]) and torch.equal(stack.sin[p], sin[0, 0])
    model.fused_decode = None
    assert torch.equal(fused, step_logits(model, [3, 8, 1], start=start))


def test_int32_ids_run_the_layers(request):
    _, model = prepared(request, "tiny-llama", torch.float32)
    calls = counted(model)
    with torch.inference_mode():
        cache = new_kv_cache(model, 1, max_len=16)
        prefill(model, torch.tensor([PROMPT]), cache)
        logits = decode_step(model, torch.tensor([3], dtype=torch.int32), cache)
    assert calls == [False, False]
    cache.length = len(PROMPT)
    with torch.inference_mode():
        assert torch.equal(decode_step(model, torch.tensor([3]), cache), logits)
    assert calls[-1] is True


@pytest.mark.parametrize("second", [PROMPT[::-1], PROMPT[2:]])  # a batch of two without padding, and with
def test_a_batch_runs_the_layers(request, second):
    _, model = prepared(request, "tiny-llama", torch.float32)
    calls = counted(model)
    tokens = generate(model, [PROMPT, second], max_new_tokens=6)
    assert len(calls) == (6 if len(second) == len(PROMPT) else 0) and not any(calls)  # (padded: a mask, no call)
    model.fused_decode = None
    assert generate(model, [PROMPT, second], max_new_tokens=6) == tokens


@pytest.fixture
def int8_activations(request):
    """Set quant_linear's int8 activations for the test (request.param), then restore them."""
    from lmforge.kernels import quant_linear

    previous = quant_linear.set_int8_activations(request.param)
    yield request.param
    quant_linear.set_int8_activations(previous)


@pytest.mark.parametrize("int8_activations", [True, False], indirect=True, ids=["int8_x", "weight_only"])
@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_layers_run_in_the_stack_as_they_do_one_by_one(request, bits, int8_activations):
    from lmforge.quant.int_linear import quantize_model

    request.getfixturevalue("quant_layer_ops")
    request.getfixturevalue("bf16_ops")
    model = context_model("tiny-qwen2", max_seq_len=64).to(torch.bfloat16)  # q/k/v biases
    quantize_model(model, bits=bits, group_size=32)
    assert prepare_for_inference(model)["fused_decode"] == 1
    calls = counted(model)
    tokens = decode(model, PROMPT, max_new_tokens=12)
    assert calls == [False] + [True] * 11
    assert_not_constant(tokens)
    fused = step_logits(model, tokens)
    model.fused_decode = None
    assert decode(model, PROMPT, max_new_tokens=12) == tokens
    assert torch.equal(fused, step_logits(model, tokens))


def test_int4_layers_follow_a_change_of_int8_activations(request):
    from lmforge.kernels import quant_linear
    from lmforge.quant.int_linear import quantize_model

    request.getfixturevalue("quant_layer_ops")
    request.getfixturevalue("bf16_ops")
    if not quant_linear.vnni():
        pytest.skip("no int8 activations here (AVX512-VNNI)")
    model = context_model("tiny-llama", max_seq_len=64).to(torch.bfloat16)
    quantize_model(model, bits=4, group_size=32)
    assert prepare_for_inference(model)["fused_decode"] == 1
    calls = counted(model)
    previous = quant_linear.set_int8_activations(not quant_linear.int8_activations())
    try:
        fused = step_logits(model, [3, 8])
        assert calls == [False, False, False]  # the stack was built for the other setting: the layers run
        model.fused_decode = None
        assert torch.equal(fused, step_logits(model, [3, 8]))
    finally:
        quant_linear.set_int8_activations(previous)


def test_a_forward_hook_makes_the_layers_run(request):
    """The stack runs past module hooks (MTP reads the final norm's output with one; gated cross-attention hooks
    layers): with one on the norm, each step runs the layers and the hook sees it; without, the stack runs again."""
    _, model = prepared(request, "tiny-llama", torch.float32)
    calls, seen = counted(model), []
    handle = model.norm.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    step_logits(model, [4, 8, 15])
    handle.remove()
    assert calls == [] and len(seen) == 4  # the prefill and 3 decode steps, all through the layers
    step_logits(model, [4, 8, 15])
    assert calls == [False, True, True, True]  # the prefill is not one token: the layers take it
