"""Sampling transforms against transformers' LogitsProcessors/Warpers and the OpenAI formulas; per-row params."""

import pytest
import torch
from scipy.stats import chisquare
from transformers.generation import logits_process as hf

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.generation.logits_process import (
    apply_logit_bias,
    apply_min_p,
    apply_presence_frequency,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
)
from lmforge.generation.sampling import NonFiniteLogitsError, Sampler, TokenHistory, sample, sample_rows
from lmforge.generation.sampling_params import SamplingParams

V = 64


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(4, V) * 3


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, -inf where the other is -inf."""
    return bool(torch.equal(a.isneginf(), b.isneginf())) and torch.allclose(a[a.isfinite()], b[b.isfinite()])


def test_temperature_top_k_top_p_min_p_equal_transformers(logits):
    ids = torch.zeros(4, 1, dtype=torch.long)
    for t in (0.3, 1.0, 1.7):
        assert same(apply_temperature(logits, t), hf.TemperatureLogitsWarper(t)(ids, logits.clone()))
    for k in (1, 5, 63):
        assert same(apply_top_k(logits, k), hf.TopKLogitsWarper(k)(ids, logits.clone()))
    for p in (0.05, 0.5, 0.9, 0.999):
        assert same(apply_top_p(logits, p), hf.TopPLogitsWarper(p)(ids, logits.clone()))
    for m in (0.01, 0.1, 0.5):
        assert same(apply_min_p(logits, m), hf.MinPLogitsWarper(m)(ids, logits.clone()))


def test_per_row_parameters_equal_transformers_row_by_row(logits):
    ids = torch.zeros(1, 1, dtype=torch.long)
    ks, ps, ms = [0, 3, 10, 64], [1.0, 0.3, 0.8, 0.95], [0.0, 0.05, 0.2, 0.0]
    got_k = apply_top_k(logits, torch.tensor(ks)[:, None])
    got_p = apply_top_p(logits, torch.tensor(ps)[:, None])
    got_m = apply_min_p(logits, torch.tensor(ms)[:, None])
    for row in range(4):
        x = logits[row:row + 1]
        assert same(got_k[row:row + 1], x if ks[row] == 0 else hf.TopKLogitsWarper(ks[row])(ids, x.clone()))
        assert same(got_p[row:row + 1], x if ps[row] == 1 else hf.TopPLogitsWarper(ps[row])(ids, x.clone()))
        assert same(got_m[row:row + 1], x if ms[row] == 0 else hf.MinPLogitsWarper(ms[row])(ids, x.clone()))


def test_top_p_keeps_the_crossing_token():
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    assert apply_top_p(logits, 0.6).isfinite().tolist() == [[True, True, False]]  # 0.5 < 0.6 -> 0.3 crosses it
    assert apply_top_p(logits, 0.5).isfinite().tolist() == [[True, False, False]]


def test_repetition_penalty_equals_transformers(logits):
    prompt_and_output = torch.randint(0, V, (4, 12))
    ids = prompt_and_output.tolist()
    history = TokenHistory.from_tokens([r[:8] for r in ids], V, generated=[r[8:] for r in ids])
    for penalty in (1.3, 0.7):
        expected = hf.RepetitionPenaltyLogitsProcessor(penalty)(prompt_and_output, logits.clone())
        assert torch.allclose(apply_repetition_penalty(logits, history.seen, penalty), expected)


def test_presence_and_frequency_penalty_follow_the_openai_formula(logits):
    prompt = torch.randint(0, V, (4, 6)).tolist()
    generated = torch.randint(0, V, (4, 20)).tolist()
    history = TokenHistory.from_tokens(prompt, V, generated=generated)
    got = apply_presence_frequency(logits, history.counts, 0.4, 0.25)
    expected = logits.clone()  # mu[j] -> mu[j] - c[j] * alpha_frequency - float(c[j] > 0) * alpha_presence
    for row in range(4):
        for token in set(generated[row]):
            c = generated[row].count(token)
            expected[row, token] -= c * 0.25 + 0.4
    assert torch.allclose(got, expected)


def test_token_history_append_matches_from_tokens():
    prompt = [[1, 2], [3, 3]]
    history = TokenHistory.from_tokens(prompt, 8)
    for step in ([4, 5], [4, 6], [1, 7]):
        history.append(torch.tensor(step), torch.tensor([True, step != [4, 6]]))
    rebuilt = TokenHistory.from_tokens(prompt, 8, generated=[[4, 4, 1], [5, 7]])
    assert torch.equal(history.counts, rebuilt.counts) and torch.equal(history.seen, rebuilt.seen)


def test_logit_bias_equals_sequence_bias_processor(logits):
    bias = {3: 5.0, 17: -100.0, 40: 0.5}
    dense = torch.zeros(4, V)
    for token, value in bias.items():
        dense[:, token] = value
    expected = hf.SequenceBiasLogitsProcessor({(t,): b for t, b in bias.items()})(torch.zeros(4, 2).long(), logits)
    assert torch.allclose(apply_logit_bias(logits, dense), expected)
    forced = sample(logits, SamplingParams(logit_bias={"9": 100}))  # string keys as in JSON
    assert forced.tolist() == [9, 9, 9, 9]


def test_greedy_rows_are_argmax_and_sampled_rows_follow_softmax():
    """Greedy and sampled rows in one batch, each with its temperature; chi-square over 20,000 draws per row kind
    (a temperature 10% off gives p <= 2e-6 at each temperature; the old `atol=0.03` on frequencies let it through)."""
    n, temperatures = 20_000, (0.0, 0.5, 1.0, 2.0)
    logits = torch.tensor([[0.0, 1.0, 2.0]]).repeat(len(temperatures) * n, 1)
    sampler = Sampler([SamplingParams(temperature=t) for t in temperatures] * n, 3)
    draws = sampler(logits, generators=torch.Generator().manual_seed(0)).tokens.view(n, len(temperatures))
    assert (draws[:, 0] == 2).all()
    for col, t in enumerate(temperatures[1:], start=1):
        expected = torch.softmax(logits[0].double() / t, -1) * n
        assert chisquare(torch.bincount(draws[:, col], minlength=3).numpy(), expected.numpy()).pvalue > 0.01, t


def test_top_k_sampling_never_leaves_the_top_k(logits):
    params = SamplingParams(temperature=2.0, top_k=3)
    allowed = logits.topk(3).indices
    for _ in range(50):
        tokens = sample(logits, params)
        assert (allowed == tokens[:, None]).any(-1).all()


def test_seeded_rows_reproduce_whatever_the_batch(logits):
    seeded = SamplingParams(temperature=4.0, seed=11)
    other = SamplingParams(temperature=1.5, top_p=0.9)

    def draw(params, rows):
        sampler = Sampler(params, V)
        gens = [torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in params]
        return [sampler(logits[rows], generators=gens).tokens.tolist() for _ in range(10)]

    alone = [step[0] for step in draw([seeded], [0])]
    mixed = [step[1] for step in draw([other, seeded, other], [1, 0, 2])]
    assert alone == mixed
    assert alone != [step[0] for step in draw([SamplingParams(temperature=4.0, seed=12)], [0])]


def test_logprobs_are_raw_log_softmax(logits):
    params = [SamplingParams(logprobs=2), SamplingParams(temperature=0.5, top_k=2, logprobs=5)] * 2
    out = sample_rows(logits, params, generators=torch.Generator().manual_seed(0))
    raw = torch.log_softmax(logits, -1)
    assert torch.allclose(out.logprobs, raw.gather(1, out.tokens[:, None])[:, 0])
    assert out.top_ids.shape == (4, 5) and torch.equal(out.top_ids[:, 0], logits.argmax(-1))
    assert torch.allclose(out.top_logprobs, raw.topk(5).values)


def test_non_finite_logits_name_the_rows(logits):
    bad = logits.clone()
    bad[1, 7] = float("nan")
    bad[3] = float("-inf")
    with pytest.raises(NonFiniteLogitsError, match=r"NaN or infinite.*\[1, 3\]") as err:
        sample(bad)
    assert err.value.rows == [1, 3] and isinstance(err.value, LmforgeError)


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("temperature", float("nan")), ("top_k", -1), ("top_k", 2.5), ("top_p", 0.0),
    ("top_p", 1.5), ("min_p", -0.1), ("repetition_penalty", 0.0), ("presence_penalty", 2.5),
    ("frequency_penalty", -3), ("logit_bias", {5: 101}), ("logit_bias", {"x": 1}), ("logit_bias", [1, 2]),
    ("seed", -1), ("stop_token_ids", ["a"]), ("stop", [""]), ("stop", 5), ("logprobs", 21),
    ("max_new_tokens", 0), ("truncate", "yes"),
])
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        SamplingParams(**{field: value})


def test_params_normalise_and_compare():
    a = SamplingParams(stop="###", stop_token_ids=[2, 1, 2], logit_bias={"3": 1})
    assert a.stop == ("###",) and a.stop_token_ids == (1, 2) and a.logit_bias == {3: 1.0}
    assert a == SamplingParams(stop=["###"], stop_token_ids=(1, 2), logit_bias={3: 1.0}) and hash(a)
