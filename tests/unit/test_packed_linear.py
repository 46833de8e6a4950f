"""Linears packed once for oneDNN give F.linear's numbers (bf16 bitwise, fp32 to rounding) and leave every decoding
path unchanged."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.engine.llm import LLM, EngineConfig
from lmforge.generation.decode_bench import bytes_read_per_token
from lmforge.generation.generate import decode
from lmforge.generation.sampling_params import SamplingParams
from lmforge.kernels.backend_table import LEVELS, Capability
from lmforge.model import packed_linear
from lmforge.model.packed_linear import PackedLinear, pack_linears, packing_available
from tests.context_lm import assert_greedy_up_to_ties, assert_not_constant, context_model

needs_bf16 = pytest.mark.skipif(not packing_available(torch.bfloat16),
                                reason="oneDNN cannot pack bf16 linears here (its bf16 path needs AVX512)")
needs_fp32 = pytest.mark.skipif(not packing_available(torch.float32), reason="this torch build has no oneDNN")
PACKABLE = [pytest.param(torch.bfloat16, marks=needs_bf16), pytest.param(torch.float32, marks=needs_fp32)]


@needs_bf16
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 48), (5, 48), (2, 3, 48), (0, 48)])
def test_packed_linear_equals_f_linear(bias, shape):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80, bias=bias).to(torch.bfloat16)
    x = torch.randn(*shape).to(torch.bfloat16)
    packed = PackedLinear(linear)
    with torch.inference_mode():
        out = packed(x)
        assert out.shape == (*shape[:-1], 80)
        assert torch.equal(out, F.linear(x, linear.weight, linear.bias))
        exact = F.linear(x.float(), linear.weight.float(), None if linear.bias is None else linear.bias.float())
        assert torch.allclose(out.float(), exact, atol=0.05, rtol=0.02)  # bf16 output rounding


def tiny_model(dtype):
    return context_model(max_seq_len=256).to(dtype)  # greedy output depends on context (tests/context_lm.py)


@needs_bf16
def test_pack_linears_keeps_logits_and_greedy_tokens():
    model = tiny_model(torch.bfloat16)
    ids = torch.randint(1, 256, (2, 21))
    prompt = ids[0].tolist()
    with torch.inference_mode():
        before = model(ids)
    tokens_before = decode(model, prompt, max_new_tokens=24)
    assert_not_constant(tokens_before)
    bytes_before = bytes_read_per_token(model)
    n = pack_linears(model)
    cfg = model.config
    assert n == 7 * cfg.n_layers  # q, k, v, o, gate, up, down per layer; not a bf16 lm_head (float32 logits)
    assert sum(isinstance(m, PackedLinear) for m in model.modules()) == n
    assert [type(m) for m in model.modules() if type(m) is nn.Linear] == [nn.Linear] and \
        type(model.lm_head) is nn.Linear
    with torch.inference_mode():
        assert torch.equal(model(ids), before)
    assert decode(model, prompt, max_new_tokens=24) == tokens_before
    assert bytes_read_per_token(model) == bytes_before


@pytest.mark.parametrize("dtype", PACKABLE)
def test_packed_model_in_the_paged_engine_matches_single_sequence_decoding(dtype):
    model = context_model(max_seq_len=256).to(dtype)
    prompts = [[(7 * i + j) % 250 + 1 for j in range(5 + 9 * i)] for i in range(5)]
    reference = [decode(model, p, max_new_tokens=12) for p in prompts]
    for tokens in reference:
        assert_not_constant(tokens)
    assert pack_linears(model, dtypes=(dtype,)) == 7 * model.config.n_layers + (dtype == torch.float32)
    outs = LLM(model, None, EngineConfig(num_blocks=64, block_size=4)).generate(
        prompts, [SamplingParams(max_new_tokens=12)] * len(prompts))
    served = [o.output_ids for o in outs]
    if dtype == torch.float32:
        assert served == reference
    else:  # bf16 rounding may flip a near-tie: each token is a full forward's argmax up to one bf16 step
        for prompt, tokens in zip(prompts, served, strict=True):
            assert_greedy_up_to_ties(model, prompt, tokens, tol=0.15)


@needs_fp32
@pytest.mark.parametrize("shape", [(1, 48), (7, 48)])
def test_packed_fp32_linear_matches_f_linear(shape):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80)
    x = torch.randn(*shape)
    with torch.inference_mode():
        out = PackedLinear(linear)(x)
        assert torch.allclose(out, F.linear(x, linear.weight, linear.bias), atol=1e-5, rtol=1e-5)


@needs_fp32
def test_fp32_packing_follows_the_requested_dtypes():
    model = tiny_model(torch.float32)
    assert pack_linears(model, dtypes=(torch.bfloat16,)) == 0  # bf16 only: fp32 weights left alone
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    ids = torch.randint(1, 256, (2, 21))
    with torch.inference_mode():
        before = model(ids)
    assert pack_linears(model, dtypes=(torch.float32,)) == 7 * model.config.n_layers + 1
    with torch.inference_mode():
        assert torch.allclose(model(ids), before, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("level", LEVELS)
def test_default_dtypes_pack_fp32_only_on_amd(level):
    intel, amd = Capability(level, vendor="GenuineIntel"), Capability(level, vendor="AuthenticAMD")
    assert packed_linear.default_packed_dtypes(intel) == (torch.bfloat16,)
    assert packed_linear.default_packed_dtypes(amd) == (torch.bfloat16, torch.float32)
    assert packed_linear.default_packed_dtypes(Capability(level, onednn_bf16=False, vendor="AuthenticAMD")) == \
        (torch.float32,)


def test_other_dtypes_are_refused():
    with pytest.raises(Exception, match="only bf16 or fp32 CPU linears"):
        PackedLinear(nn.Linear(4, 4).to(torch.float16))
