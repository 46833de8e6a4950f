"""Flamingo-style gated cross-attention: inserted layers leave the LM unchanged until their gates open, then the
logits depend on the image; padded image features are invisible."""

import torch

from lmforge.model.config import ModelConfig
from lmforge.model.transformer import Transformer
from lmforge.model.vision.cross_attention import CrossAttentionAdapter


def _lm():
    cfg = ModelConfig.from_flat(family="llama", vocab_size=64, dim=32, n_layers=4, n_heads=4, n_kv_heads=2,
                                ffn_dim=64, max_seq_len=64)
    return Transformer(cfg).eval()


def test_closed_gates_keep_the_lm_bit_identical_and_open_gates_read_the_image():
    lm = _lm()
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        before = lm(ids)
        adapter = CrossAttentionAdapter(lm, vision_dim=24, every=2)
        assert adapter.positions == [1, 3]
        image = torch.randn(2, 5, 24)
        with adapter.images(image):
            torch.testing.assert_close(lm(ids), before, atol=0, rtol=0)
            for cross in adapter.cross:
                cross.attn_gate.fill_(1.0)
                cross.ffn_gate.fill_(0.5)
            with_image = lm(ids)
        assert (with_image - before).abs().max() > 1e-3
        torch.testing.assert_close(lm(ids), before, atol=0, rtol=0)  # outside the context: the text path
        other = image.clone()
        other[1] = torch.randn(5, 24)
        with adapter.images(other):
            changed = lm(ids)
        torch.testing.assert_close(changed[0], with_image[0], atol=1e-6, rtol=0)
        assert (changed[1] - with_image[1]).abs().max() > 1e-3
        mask = torch.ones(2, 5, dtype=torch.long)
        mask[:, 3:] = 0
        padded = image.clone()
        padded[:, 3:] = 50.0
        with adapter.images(image[:, :3]):
            short = lm(ids)
        with adapter.images(padded, mask):
            torch.testing.assert_close(lm(ids), short, atol=1e-5, rtol=0)
