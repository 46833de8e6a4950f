"""Multi-token prediction: offsets by closed form and causality, the loss learns a sequence rule, drafts match it."""

import pytest
import torch
import torch.nn.functional as F

from lmforge.model import Transformer, get_preset
from lmforge.model.mtp import MultiTokenPrediction, forward_with_hidden, mtp_draft, mtp_logits, mtp_loss


def _pair(**overrides):
    cfg = get_preset("tiny-llama", n_mtp_modules=2, **overrides)
    return Transformer(cfg), MultiTokenPrediction(cfg)


def test_depth_k_is_fed_token_i_plus_k_closed_form():
    """Make every module copy its input token to its output (one-hot embeddings, identity projection, blocks
    with zeroed output projections): then argmax of depth k at position i must be input_ids[i + k]."""
    model, mtp = _pair(vocab_size=32, dim=64, tie_embeddings=True)
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(32, 64) * 3)
        for module in mtp.depths:
            module.eh_proj.weight.copy_(torch.cat([torch.eye(64), torch.zeros(64, 64)], dim=1))
            module.block.attn.o_proj.weight.zero_()
            module.block.mlp.down_proj.weight.zero_()
    ids = torch.randint(0, 32, (2, 12))
    logits, hidden = forward_with_hidden(model, ids)
    assert hidden.shape == (2, 12, 64)
    assert torch.equal(model.lm_head(hidden), logits)  # the hook returns what the head reads
    out = mtp_logits(model, mtp, ids, hidden)
    assert [tuple(x.shape) for x in out] == [(2, 11, 32), (2, 10, 32)]
    for k, x in enumerate(out, start=1):
        assert torch.equal(x.argmax(-1), ids[:, k:])


def test_depth_k_position_i_sees_tokens_up_to_i_plus_k_only():
    model, mtp = _pair()
    ids = torch.randint(0, 256, (1, 14))
    changed = ids.clone()
    changed[0, 9] = (ids[0, 9] + 1) % 256
    with torch.no_grad():
        a = mtp_logits(model, mtp, ids, forward_with_hidden(model, ids)[1])
        b = mtp_logits(model, mtp, changed, forward_with_hidden(model, changed)[1])
    for k, (x, y) in enumerate(zip(a, b, strict=True), start=1):
        diff = (x - y).abs().amax(-1)[0]
        assert diff[:9 - k].max() == 0 and diff[9 - k] > 0  # position i predicts token i+k+1 from tokens <= i+k


def _progressions(n: int, T: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    start = torch.randint(0, vocab, (n, 1), generator=gen)
    stride = torch.randint(1, 4, (n, 1), generator=gen)
    return (start + stride * torch.arange(T)) % vocab


@pytest.mark.slow  # a few hundred optimizer steps (~10 s on a busy 2-core machine)
def test_mtp_loss_learns_and_drafts_follow_the_rule():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model, mtp = _pair(vocab_size=32, dim=64, n_layers=2, mtp_loss_weight=1.0)
        opt = torch.optim.AdamW([*model.parameters(), *mtp.parameters()], lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        history = []
        for _ in range(100):
            ids = _progressions(32, 16, 32, gen)
            logits, hidden = forward_with_hidden(model, ids)
            main = F.cross_entropy(logits[:, :-1].reshape(-1, 32), ids[:, 1:].reshape(-1))
            extra = mtp_loss(model, mtp, ids, hidden)
            opt.zero_grad()
            (main + extra).backward()
            opt.step()
            history.append(float(extra.detach()))
        print(f"MTP loss: first 10 steps {sum(history[:10]) / 10:.3f}, last 10 steps {sum(history[-10:]) / 10:.3f}")
        assert sum(history[-10:]) / 10 < 0.25 * sum(history[:10]) / 10
        ids = _progressions(64, 12, 32, gen)
        draft = mtp_draft(model, mtp, ids)
    finally:
        torch.set_num_threads(threads)
    truth = (ids[:, -1:] + (ids[:, 1:2] - ids[:, :1]) * torch.arange(1, 4)) % 32
    assert draft.shape == (64, 3)
    with torch.no_grad():
        assert torch.equal(draft[:, 0], model(ids)[:, -1].argmax(-1))  # first token is the main model's
    accuracy = (draft == truth).float().mean(0)
    print(f"draft accuracy per position (main, depth 1, depth 2): {accuracy.tolist()}")
    assert bool((accuracy > 0.8).all())


def test_mtp_on_deepseek_v3_preset():
    """The DeepSeek-V3 miniature: MLA attention and an MoE block inside the MTP module, gradients reach both."""
    cfg = get_preset("tiny-deepseek-v3")
    model, mtp = Transformer(cfg), MultiTokenPrediction(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 10))
    loss = mtp_loss(model, mtp, ids, forward_with_hidden(model, ids)[1])
    loss.backward()
    assert torch.isfinite(loss) and mtp.depths[0].eh_proj.weight.grad.abs().sum() > 0
    assert model.embed.weight.grad.abs().sum() > 0  # the shared embedding learns from the MTP loss too
    assert mtp_draft(model, mtp, ids).shape == (2, 1 + cfg.heads.n_mtp_modules)
