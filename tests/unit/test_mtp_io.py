"""MTP modules saved beside a Hugging Face directory (mtp.safetensors, DeepSeek-V3 names) and loaded back."""

import pytest
import torch
from safetensors.torch import load_file

import lmforge
from lmforge.formats.loader import LM
from lmforge.formats.mtp_io import MTP_FILE
from lmforge.model import Transformer, get_preset
from lmforge.model.mtp import MultiTokenPrediction, forward_with_hidden, mtp_logits


def _lm(preset: str, **overrides) -> LM:
    torch.manual_seed(0)
    cfg = get_preset(preset, **overrides)
    mtp = MultiTokenPrediction(cfg).eval()
    with torch.no_grad():  # non-default norm weights, so a tensor loaded into the wrong place would show
        for p in mtp.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return LM(model=Transformer(cfg).eval(), tokenizer=None, source=preset, mtp=mtp)


@pytest.mark.parametrize("preset,depths", [("tiny-llama", 2), ("tiny-deepseek-v3", 1)])
def test_mtp_round_trip_keeps_the_mtp_logits(tmp_path, preset, depths):
    lm = _lm(preset, n_mtp_modules=depths)
    lm.save(tmp_path)
    names = load_file(str(tmp_path / MTP_FILE)).keys()
    n = lm.config.n_layers
    assert {f"model.layers.{n + k}.{part}" for k in range(depths)
            for part in ("enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight")} <= set(names)
    assert not any(k.startswith(f"model.layers.{n}.") for k in load_file(str(tmp_path / "model.safetensors")))
    loaded = lmforge.load(str(tmp_path))
    assert loaded.mtp is not None and len(loaded.mtp.depths) == depths
    ids = torch.randint(0, lm.config.vocab_size, (2, 9))
    with torch.no_grad():
        ref = mtp_logits(lm.model, lm.mtp, ids, forward_with_hidden(lm.model, ids)[1])
        got = mtp_logits(loaded.model, loaded.mtp, ids, forward_with_hidden(loaded.model, ids)[1])
    assert len(got) == depths
    for a, b in zip(ref, got, strict=True):
        torch.testing.assert_close(a, b)


def test_a_directory_without_mtp_loads_as_before(tmp_path):
    lm = _lm("tiny-llama", n_mtp_modules=1)
    lm.mtp = None
    lm.save(tmp_path)
    assert not (tmp_path / MTP_FILE).exists()
    assert lmforge.load(str(tmp_path)).mtp is None
