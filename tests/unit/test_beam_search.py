"""Beam search equals transformers' generate(num_beams=...) on a tiny random model, for each early_stopping mode."""

import pytest
import torch

from lmforge.common.errors import ConfigError
from lmforge.formats.loader import load
from lmforge.generation.beam_search import BeamSearchParams, beam_search
from lmforge.generation.generate import generate
from tests.context_lm import assert_context_dependent, assert_not_constant, naive_greedy
from tests.hf_models import tiny_hf_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    ref = tiny_hf_model("llama", tie=False, noise=0.3)  # greedy and beams depend on context (tests/context_lm.py)
    path = tmp_path_factory.mktemp("beam")
    ref.save_pretrained(path)
    return ref, load(path).model


def hf_beams(ref, prompt, stops, **kw):
    with torch.no_grad():
        out = ref.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, pad_token_id=0,
                           eos_token_id=stops, **kw)
    return out[0, prompt.shape[1]:].tolist()


@pytest.mark.parametrize("length_penalty,early_stopping", [(1.0, False), (0.0, "never"), (2.0, True), (-1.0, False)])
def test_beam_search_equals_transformers(models, length_penalty, early_stopping):
    ref, model = models
    reasons = []
    for _ in range(3):
        prompt = torch.randint(0, 256, (1, 5))
        free = beam_search(model, prompt[0].tolist(), BeamSearchParams(num_beams=4, max_new_tokens=10))[0].tokens
        assert_not_constant(free)
        stops = [free[3], free[8]]  # tokens the beams are likely to meet: some end early (free[8]: even at penalty 2)
        params = BeamSearchParams(num_beams=4, max_new_tokens=10, length_penalty=length_penalty,
                                  early_stopping=early_stopping, stop_token_ids=stops)
        best = beam_search(model, prompt[0].tolist(), params)[0]
        expected = hf_beams(ref, prompt, stops, max_new_tokens=10, num_beams=4, length_penalty=length_penalty,
                            early_stopping=early_stopping)
        assert best.tokens == expected[:len(best.tokens)] and set(expected[len(best.tokens):]) <= {0}
        reasons.append(best.finish_reason)
    assert "stop" in reasons  # the stop-token path was exercised


def test_some_beams_end_on_a_stop_token(models):
    ref, model = models
    prompt = torch.randint(0, 256, (1, 5))
    free = beam_search(model, prompt[0].tolist(), BeamSearchParams(num_beams=3, max_new_tokens=10))[0]
    assert free.finish_reason == "length" and len(free.tokens) == 10
    assert_not_constant(free.tokens)
    stop = free.tokens[4]
    ended = beam_search(model, prompt[0].tolist(), BeamSearchParams(num_beams=3, max_new_tokens=10,
                                                                    stop_token_ids=[stop]))
    assert ended[0].finish_reason == "stop" or ended[0].score >= free.score
    assert ended[0].tokens == hf_beams(ref, prompt, [stop], max_new_tokens=10, num_beams=3)[:len(ended[0].tokens)]


def test_one_beam_is_greedy_and_beams_are_sorted(models):
    _, model = models
    prompt = [3, 1, 4, 1, 5]
    greedy = naive_greedy(model, prompt, 9)
    assert_not_constant(greedy)
    assert_context_dependent(model, prompt)
    assert beam_search(model, prompt, BeamSearchParams(num_beams=1, max_new_tokens=9))[0].tokens == greedy == \
        generate(model, [prompt], max_new_tokens=9)[0]
    beams = beam_search(model, prompt, BeamSearchParams(num_beams=4, max_new_tokens=6, num_return_sequences=4))
    scores = [b.score for b in beams]
    assert scores == sorted(scores, reverse=True) and len({tuple(b.tokens) for b in beams}) == 4


def test_beam_params_errors():
    for kw, field in [({"num_beams": 0}, "num_beams"), ({"early_stopping": "sometimes"}, "early_stopping"),
                      ({"num_return_sequences": 5}, "num_return_sequences"), ({"max_new_tokens": 0}, "max_new_tokens"),
                      ({"length_penalty": "x"}, "length_penalty")]:
        with pytest.raises(ConfigError, match=field):
            BeamSearchParams(**kw)
