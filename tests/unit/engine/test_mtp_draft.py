"""The MTP head as a speculative draft: greedy output equals plain greedy, its drafts equal the no-cache reference
(`mtp_draft`), sampling keeps the target distribution, and a trained head is accepted far more than a fresh one."""

import pytest
import torch
import torch.nn.functional as F

from lmforge.generation.generate import generate
from lmforge.generation.mtp_draft import MTPDraft
from lmforge.generation.sampling_params import SamplingParams
from lmforge.generation.speculative import speculative_generate
from lmforge.model import Transformer, get_preset
from lmforge.model.mtp import MultiTokenPrediction, forward_with_hidden, mtp_draft, mtp_loss
from tests.speculative_stats import pooled_chisquare, sampled_counts, target_joint

VOCAB = 32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def progressions(n: int, T: int, gen: torch.Generator) -> torch.Tensor:
    """Arithmetic progressions mod VOCAB with a stride of 1..3: the next tokens follow from the context."""
    start = torch.randint(0, VOCAB, (n, 1), generator=gen)
    stride = torch.randint(1, 4, (n, 1), generator=gen)
    return (start + stride * torch.arange(T)) % VOCAB


def pair(depths: int, seed: int = 0) -> tuple[Transformer, MultiTokenPrediction]:
    torch.manual_seed(seed)
    cfg = get_preset("tiny-llama", vocab_size=VOCAB, dim=64, n_layers=2, n_mtp_modules=depths, mtp_loss_weight=1.0)
    return Transformer(cfg).eval(), MultiTokenPrediction(cfg).eval()


@pytest.fixture(scope="module")
def trained():
    """(model, trained MTP with 2 depths): pretrained together on progressions for 100 steps, as in test_mtp."""
    model, mtp = pair(2)
    opt = torch.optim.AdamW([*model.parameters(), *mtp.parameters()], lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train(), mtp.train()
    for _ in range(100):
        ids = progressions(16, 32, gen)
        logits, hidden = forward_with_hidden(model, ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        (loss + mtp_loss(model, mtp, ids, hidden)).backward()
        opt.step()
    return model.eval(), mtp.eval()


def first_depths(mtp: MultiTokenPrediction, depths: int) -> MultiTokenPrediction:
    """The same modules cut to their first `depths` depths."""
    short = MultiTokenPrediction(mtp.config.replace(n_mtp_modules=depths))
    short.load_state_dict({k: v for k, v in mtp.state_dict().items() if int(k.split(".")[1]) < depths})
    return short.eval()


PROMPTS = [[7], [3, 5, 7, 9], [30, 31, 0, 1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0], [31, 5, 17, 2, 20, 3],
           [4, 8, 12, 16, 20, 24, 28, 1, 2, 3]]  # the last three change stride: the trained head is wrong sometimes


@pytest.mark.parametrize("depths", [1, 2])
@pytest.mark.parametrize("kind", ["random", "trained"])
def test_greedy_with_mtp_draft_equals_plain_greedy_and_the_reference_drafts(monkeypatch, trained, depths, kind):
    model, mtp = pair(depths, seed=1) if kind == "random" else (trained[0], first_depths(trained[1], depths))
    proposals, current = [], {}
    original = MTPDraft.propose

    def recording(self, tokens, k, dist, generator):
        drafted, q = original(self, tokens, k, dist, generator)
        proposals.append((list(tokens), drafted.tolist(), current["prompt"]))
        return drafted, q

    monkeypatch.setattr(MTPDraft, "propose", recording)
    params = SamplingParams(temperature=0, max_new_tokens=24)
    accepted, partial = 0, 0
    for prompt in PROMPTS:
        current["prompt"] = len(prompt)
        expected = generate(model, [prompt], params)[0]
        for num_draft in (1, 2, 4):
            out = speculative_generate(model, prompt, mtp, params, num_draft=num_draft)
            assert out.tokens == expected, (prompt, num_draft)
            assert 0 <= out.accepted <= out.proposed <= min(num_draft, depths) * out.target_forwards
            accepted += out.accepted
            partial += 0 < out.accepted < out.proposed
    checked = 0
    for tokens, drafted, prompt_len in proposals:  # each round's drafts = the no-cache MTP helper's on that context
        if len(tokens) > prompt_len and drafted:  # (the helper's first token is the target's: not a prompt token)
            reference = mtp_draft(model, mtp, torch.tensor([tokens[:-1]]))[0]
            assert reference[0] == tokens[-1]  # greedy: the token the target chose last round
            assert drafted == reference[1:1 + len(drafted)].tolist()
            checked += 1
    assert checked > 50
    if kind == "trained":
        assert accepted > 0 and partial > 0  # accepted drafts, and rejections after them, are exercised


@pytest.mark.slow  # 3000 short speculative runs (~10 s)
def test_mtp_sampling_keeps_the_target_distribution(monkeypatch):
    """First three sampled tokens (both MTP depths drafting, about half the drafts accepted) ~ the target's joint
    distribution (chi-square); the same test rejects a draft that reports a q other than the one it sampled from."""
    torch.manual_seed(4)
    cfg = get_preset("tiny-llama", vocab_size=6, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64,
                     n_mtp_modules=2)
    target, mtp = Transformer(cfg).eval(), MultiTokenPrediction(cfg).eval()
    with torch.no_grad():  # sharper p and q than a random init gives (its logits are nearly flat)
        target.norm.weight.mul_(3)
        for module in mtp.depths:
            module.norm.weight.mul_(3)
    prompt = [1, 2, 3]
    expected = target_joint(target, prompt, 3, 1.0)

    def pvalues() -> tuple[float, float]:  # the three tokens jointly, and the first two
        counts = sampled_counts(target, prompt, mtp, 3, 1.0, runs=1500, num_draft=2)
        pvalue, rare_observed, rare_expected = pooled_chisquare(counts, expected)
        assert rare_observed <= 5 + 3 * rare_expected
        return pvalue, pooled_chisquare(counts.view(-1, 6).sum(1), expected.view(-1, 6).sum(1))[0]

    good = pvalues()
    original = MTPDraft.propose

    def wrong_q(self, tokens, k, dist, generator):
        drafted, q = original(self, tokens, k, dist, generator)
        return drafted, torch.softmax(q.log() * 0.3, -1)  # a flatter q than the drafts were drawn from

    monkeypatch.setattr(MTPDraft, "propose", wrong_q)
    bad = pvalues()
    print(f"\nMTP draft sampling: chi-square p (3 tokens, first 2) = {good[0]:.3f}, {good[1]:.3f}; with a wrong q "
          f"{bad[0]:.4f}, {bad[1]:.4f}")
    assert min(good) > 0.01
    assert min(bad) < 0.01


def acceptance(model, mtp, gen: torch.Generator) -> tuple[float, float]:
    params = SamplingParams(temperature=0, max_new_tokens=24)
    proposed = accepted = forwards = produced = 0
    for prompt in progressions(12, 6, gen).tolist():
        out = speculative_generate(model, prompt, mtp, params, num_draft=2)
        proposed, accepted = proposed + out.proposed, accepted + out.accepted
        forwards, produced = forwards + out.target_forwards, produced + len(out.tokens)
    return accepted / proposed, produced / forwards


@pytest.mark.slow  # 100 training steps (~10 s on a busy 2-core machine)
def test_trained_mtp_head_is_accepted_far_more_than_a_fresh_one(trained):
    model, mtp = trained
    fresh = pair(2, seed=7)[1]
    trained_rate, trained_tpf = acceptance(model, mtp, torch.Generator().manual_seed(1))
    fresh_rate, fresh_tpf = acceptance(model, fresh, torch.Generator().manual_seed(1))
    print(f"\nMTP draft acceptance (2 depths, greedy, progressions): trained {trained_rate:.3f} "
          f"({trained_tpf:.2f} tokens per target forward), fresh {fresh_rate:.3f} ({fresh_tpf:.2f})")
    assert trained_rate > fresh_rate + 0.4
    assert trained_tpf > 1.5
