"""Speculative decoding: greedy output equals plain greedy; the sampling rule preserves the target distribution."""

import time

import pytest
import torch
from scipy.stats import chisquare

from lmforge.generation.generate import generate
from lmforge.generation.sampling_params import SamplingParams
from lmforge.generation.speculative import NgramDraft, accept_reject, speculative_generate
from lmforge.model.presets import get_preset
from lmforge.model.transformer import Transformer
from tests.context_lm import assert_not_constant, context_model, naive_greedy
from tests.speculative_stats import pooled_chisquare, sampled_counts, target_joint


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: thread hand-offs cost more than the maths (and the CI machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(seed: int, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(get_preset("tiny-llama", **overrides)).eval()


@pytest.fixture(scope="module")
def target_and_draft():
    """A target whose greedy output depends on context, and a draft that agrees with it only in part (the target
    with its weights perturbed), so that rounds both accept and roll back."""
    target, draft = context_model(), context_model()
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(1)
        for p in draft.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # accepts 14 of 26, 19 of 60, 19 of 95 drafts at k = 1, 3, 5
    return target, draft


def test_greedy_with_draft_model_equals_plain_greedy(target_and_draft):
    target, draft = target_and_draft
    prompt = [5, 17, 99, 3, 42, 7]
    params = SamplingParams(temperature=0, max_new_tokens=40)
    expected = generate(target, [prompt], params)[0]
    assert_not_constant(expected)
    assert expected == naive_greedy(target, prompt, 40)
    for k in (1, 3, 5):
        out = speculative_generate(target, prompt, draft, params, num_draft=k)
        assert out.tokens == expected
        assert 0 < out.accepted < out.proposed  # accepted and rejected drafts: both cache paths ran


def test_greedy_draft_equal_to_target_accepts_everything(context_llama):
    target = context_llama
    out = speculative_generate(target, [1, 2, 3], target, SamplingParams(temperature=0, max_new_tokens=21),
                               num_draft=4)
    assert out.acceptance_rate == 1.0
    assert out.target_forwards == 5  # 4 rounds of 4 drafts + 1 bonus, then one round of 1 token
    assert_not_constant(out.tokens)
    assert out.tokens == naive_greedy(target, [1, 2, 3], 21)


def test_greedy_prompt_lookup_equals_plain_greedy(context_llama):
    target = context_llama
    prompt = [9, 8, 7, 6, 5, 9, 8, 7, 6, 5, 9, 8]
    params = SamplingParams(temperature=0, max_new_tokens=30)
    out = speculative_generate(target, prompt, "ngram", params, num_draft=4)
    expected = generate(target, [prompt], params)[0]
    assert_not_constant(expected)
    assert out.tokens == expected == naive_greedy(target, prompt, 30)
    assert out.proposed > out.accepted  # rejected lookups rolled the cache back


def test_prompt_lookup_finds_last_continuation():
    ngram = NgramDraft(max_ngram=2, vocab_size=10)
    assert ngram.lookup([1, 2, 3, 4, 1, 2, 5, 6, 1, 2], 3) == [5, 6, 1]  # last occurrence of (1, 2)
    assert ngram.lookup([7, 3, 8, 3], 2) == [8, 3]  # falls back to the 1-gram (3)
    assert ngram.lookup([1, 2, 3], 2) == []


def test_stop_token_ends_generation(context_llama):
    target = context_llama
    params = SamplingParams(temperature=0, max_new_tokens=20)
    plain = generate(target, [[1, 2, 3]], params)[0]
    assert_not_constant(plain)
    stop = plain[4]
    out = speculative_generate(target, [1, 2, 3], target, SamplingParams(temperature=0, max_new_tokens=20,
                                                                         stop_token_ids=(stop,)), num_draft=3)
    assert out.tokens == plain[:plain.index(stop) + 1] and out.finish_reason == "stop"


def first_token_counts(rule, p: torch.Tensor, q: torch.Tensor, runs: int) -> torch.Tensor:
    """How often each token comes out first when the draft proposes x ~ q and `rule` decides."""
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(p.shape[-1])
    pp = torch.stack([p, p])  # p at the draft position and at the bonus position
    for _ in range(runs):
        x = torch.multinomial(q, 1, generator=g)
        n, nxt = rule(pp, q[None], x, False, g)
        counts[int(x) if n == 1 else nxt] += 1
    return counts


def always_accept(p, q, draft, greedy, generator):
    return draft.shape[0], int(torch.multinomial(p[-1], 1, generator=generator))


def test_acceptance_rule_preserves_target_distribution_chi_square():
    torch.manual_seed(3)
    V, runs = 8, 8000
    p = torch.softmax(torch.randn(V) * 1.5, -1)
    q = torch.softmax(torch.randn(V) * 1.5, -1)
    counts = first_token_counts(accept_reject, p, q, runs)
    assert chisquare(counts.numpy(), (p * runs).numpy()).pvalue > 0.01
    wrong = first_token_counts(always_accept, p, q, runs)  # the same test must catch a broken rule
    assert chisquare(wrong.numpy(), (p * runs).numpy()).pvalue < 1e-6


def test_sampled_two_tokens_follow_target_distribution():
    """End to end on a toy model (8 tokens): the first two sampled tokens ~ p(t1) p(t2 | t1)."""
    target = tiny(4, vocab_size=8, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64)
    draft = tiny(5, vocab_size=8, dim=16, n_layers=1, n_heads=1, n_kv_heads=1, ffn_dim=32)
    prompt = [1, 2]
    expected = target_joint(target, prompt, 2, 0.1)  # [64] joint over (t1, t2)
    counts = sampled_counts(target, prompt, draft, 2, 0.1, runs=1200, num_draft=2)
    pvalue, rare_observed, rare_expected = pooled_chisquare(counts, expected)
    assert pvalue > 0.01
    assert rare_observed <= 5 + 3 * rare_expected


@pytest.mark.slow
def test_prompt_lookup_on_smollm2_speeds_up_greedy():
    import lmforge

    lm = lmforge.load("smollm2-135m")
    code = "def area(r):\n    pi = 3.14159\n    return pi * r * r\n\ndef perimeter(r):\n    pi = 3.14159\n" \
           "    retrun 2 * pi * r"
    chat = [{"role": "user", "content": "Fix the typo in this code and print the whole corrected code:\n" + code}]
    ids = lm.tokenizer.encode(lm.tokenizer.apply_chat_template(chat, add_generation_prompt=True),
                              add_special_tokens=False)
    params = SamplingParams(temperature=0, max_new_tokens=64, stop_token_ids=tuple(lm.stop_token_ids()))
    start = time.perf_counter()
    plain = generate(lm.model, [ids], params)[0]
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    out = speculative_generate(lm.model, ids, "ngram", params, num_draft=4)
    spec_s = time.perf_counter() - start
    assert out.tokens == plain
    print(f"\nprompt lookup on SmolLM2: {out.summary()}, plain {plain_s:.2f}s, speculative {spec_s:.2f}s, "
          f"speedup {plain_s / spec_s:.2f}x")
    assert out.tokens_per_forward > 1.5  # code copied from the prompt: most drafts pass
