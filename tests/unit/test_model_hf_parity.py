"""lmforge's Transformer equals transformers' Llama / Qwen2 / Qwen3 on random weights, both directions."""

import pytest
import torch

from lmforge.formats.loader import load
from tests.hf_models import tiny_hf_model

CASES = [(family, tie) for family in ("llama", "qwen2", "qwen3") for tie in (True, False)]


def _padded_batch(vocab: int):
    ids = torch.randint(0, vocab, (3, 19))
    mask = torch.ones_like(ids)
    mask[0, :7] = 0
    mask[2, :2] = 0
    return ids, mask


@pytest.mark.parametrize("family,tie", CASES)
def test_load_hf_dir_matches_transformers(tmp_path, family, tie):
    ref = tiny_hf_model(family, tie)
    ref.save_pretrained(tmp_path)
    lm = load(tmp_path)
    assert lm.config.family == family and lm.config.tie_embeddings == tie
    assert (lm.model.lm_head.weight is lm.model.embed.weight) == tie
    ids, mask = _padded_batch(ref.config.vocab_size)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = ref(ids).logits
        ours = lm.model(ids)
        expected_padded = ref(ids, attention_mask=mask, position_ids=positions).logits
        ours_padded = lm.model(ids, attention_mask=mask)
    assert ours.shape == (3, 19, ref.config.vocab_size) and ours.dtype == torch.float32
    assert (ours - expected).abs().max() <= 1e-4
    real = mask.bool()
    assert (ours_padded[real] - expected_padded[real]).abs().max() <= 1e-4
    assert torch.isfinite(ours_padded).all()


@pytest.mark.parametrize("family,tie", CASES)
def test_saved_dir_reloads_in_transformers(tmp_path, family, tie):
    import transformers

    ref = tiny_hf_model(family, tie)
    ref.save_pretrained(tmp_path / "src")
    lm = load(tmp_path / "src")
    lm.save(tmp_path / "out")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    assert type(back) is type(ref)
    ids = torch.randint(0, ref.config.vocab_size, (2, 11))
    with torch.no_grad():
        assert (back(ids).logits - ref(ids).logits).abs().max() <= 1e-5
        assert (back(ids).logits - lm.model(ids)).abs().max() <= 1e-4


def test_bf16_load_close_to_fp32(tmp_path):
    ref = tiny_hf_model("llama", True)
    ref.save_pretrained(tmp_path)
    fp32, bf16 = load(tmp_path), load(tmp_path, dtype="bfloat16")
    assert bf16.model.embed.weight.dtype == torch.bfloat16
    ids = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        a, b = fp32.model(ids), bf16.model(ids)
    assert b.dtype == torch.float32  # logits are always returned in float
    assert (a - b).abs().max() < 0.1 * a.abs().max()
