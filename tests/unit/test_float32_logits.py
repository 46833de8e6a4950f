"""Logits are float32 sums whatever the compute dtype (issue 20, item 15): a bf16 model whose two best logits round
to the same bf16 value but differ in float32 must greedily pick the float32 winner, unprepared, prepared (lmforge's
bf16 kernel) and through `lmforge generate`; int8 / int4 heads return their sums unrounded."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from lmforge.generation.generate import generate
from lmforge.generation.sampling_params import SamplingParams
from lmforge.kernels import cpu_kernels
from lmforge.model.inference import prepare_for_inference
from lmforge.quant import int_linear
from lmforge.quant.int_linear import quantize_model
from tests.cli_util import run_cli
from tests.tiny_lm import tiny_lm

PROMPT = "the cat sat"
LOSER, WINNER = 40, 41  # bf16 logits tie and argmax takes the first: LOSER; float32 says WINNER


def craft_tie(lm, hidden: torch.Tensor) -> tuple[float, float]:
    """Give WINNER and LOSER rows of the bf16 head such that, for the final hidden state `hidden` (bf16 [dim]), their
    float32 logits differ (WINNER higher) but round to the same bf16 value, far above every other logit."""
    head = lm.model.lm_head.weight
    x = hidden.double()
    with torch.no_grad():
        head.mul_(0.01)
        winner = (hidden.float() * (25.1 / float(x @ x))).bfloat16()  # logit ~25.1 (bf16 step 0.125 there)
        head[WINNER] = winner
        for j in x.abs().argsort(descending=True).tolist():
            loser = winner.clone()
            loser.view(torch.int16)[j] -= 1  # one bf16 step towards 0: w_j has x_j's sign, so the logit drops
            lo, hi = float(x @ loser.double()), float(x @ winner.double())
            same = torch.tensor([lo, hi]).bfloat16()
            if hi - lo > 1e-3 and same[0] == same[1]:
                head[LOSER] = loser
                return hi, lo
    raise AssertionError("no tie found")


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """A tiny bf16 LM with the tie crafted for PROMPT's last hidden state as the prepared model computes it."""
    lm = tiny_lm()
    lm.model.lm_head.weight = torch.nn.Parameter(lm.model.lm_head.weight.detach().clone())  # untie: the embedding
    lm.model.config = lm.model.config.replace(tie_embeddings=False)  # stays as it is
    lm.model.to(torch.bfloat16)
    ids = lm.tokenizer.encode(PROMPT)
    prepared = copy.deepcopy(lm.model)
    prepare_for_inference(prepared)
    with torch.no_grad():
        hidden = prepared.hidden_states(torch.tensor([ids]))[0, -1]
        unprepared = lm.model.hidden_states(torch.tensor([ids]))[0, -1]
    assert torch.equal(hidden, unprepared)  # the kernels round as the eager code: one tie serves both
    hi, lo = craft_tie(lm, hidden)
    assert F.linear(hidden, lm.model.lm_head.weight).float().argmax() == LOSER  # what bf16 logits picked
    path = tmp_path_factory.mktemp("tied-bf16")
    lm.save(path)
    return lm, ids, hi, lo, path


def greedy_first(model, ids) -> int:
    return generate(model, [ids], SamplingParams(temperature=0, max_new_tokens=1))[0][0]


def test_unprepared_bf16_head_gives_float32_logits(tied):
    lm, ids, hi, lo, _ = tied
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids]), last_only=True)[0, -1]
    assert logits.dtype == torch.float32
    assert logits[WINNER] - logits[LOSER] == pytest.approx(hi - lo, abs=1e-5)
    assert greedy_first(lm.model, ids) == WINNER


@pytest.mark.parametrize("kernels", [True, False])
def test_prepared_bf16_head_gives_float32_logits(tied, kernels):
    lm, ids, hi, lo, _ = tied
    model = copy.deepcopy(lm.model)
    prepare_for_inference(model, kernels=kernels)
    with torch.no_grad():
        logits = model(torch.tensor([ids]), last_only=True)[0, -1]
    assert logits[WINNER] - logits[LOSER] == pytest.approx(hi - lo, abs=1e-5)
    assert greedy_first(model, ids) == WINNER


def test_generate_cli_bf16_picks_the_float32_argmax(tied):
    _, _, _, _, path = tied
    result = run_cli("generate", PROMPT, "-m", str(path), "--dtype", "bfloat16", "-t", "0", "-n", "1", "--json",
                     "--logprobs", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["logprobs"][0]["id"] == WINNER


@pytest.mark.parametrize("rows", [1, 5, 13])
def test_bf16_kernel_float_output_is_the_unrounded_sum(rows):
    ops = cpu_kernels.bf16_linear_ops()  # here, not in a skipif: collecting the tests must not build the kernels
    if ops is None:
        pytest.skip("no AVX512-BF16 CPU (or no compiler) here")
    weight, x, bias = torch.randn(77, 64).bfloat16(), torch.randn(rows, 64).bfloat16(), torch.randn(77)
    packed = ops.pack_linear_bf16(weight)
    out = ops.linear_bf16_float(x, packed, bias, 77)
    exact = F.linear(x.double(), weight.double(), bias.double())
    assert out.dtype == torch.float32
    assert ((out.double() - exact).abs() <= F.linear(x.double().abs(), weight.double().abs()) * 2 ** -20).all()
    assert torch.equal(out.bfloat16(), ops.linear_bf16(x, packed, bias, 77))


@pytest.mark.parametrize("head_bits", [8, 4])
@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.usefixtures("weight_only_activations")  # the exact product of the bf16 input (not int8 activations)
def test_quantized_heads_return_unrounded_sums(monkeypatch, head_bits, kernel):
    lm = tiny_lm()
    quantize_model(lm.model, bits=4, group_size=32, head_bits=head_bits)
    prepare_for_inference(lm.model)  # loads the kernels where they build
    if not kernel:
        monkeypatch.setattr(int_linear, "_bf16_kernel", lambda: None, raising=False)
    ids = torch.tensor([lm.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        hidden = lm.model.hidden_states(ids)[0, -1:].bfloat16()  # what the quantized head reads
        logits = lm.model(ids, last_only=True)[0]
    exact = hidden.double() @ lm.model.lm_head.dequantize().double().t()
    assert logits.dtype == torch.float32
    assert ((logits.double() - exact).abs() <= 1e-5 * exact.abs().max()).all()
    assert (logits != logits.bfloat16().float()).float().mean() > 0.5  # not bf16 values rounded back up
