"""`lmforge clip` trains a tiny CLIP on drawn images: zero-shot accuracy on held-out images rises well above chance,
and the saved directory is a CLIP that transformers loads with the same features."""

import json
import re

import torch

from tests.cli_util import assert_user_error, run_cli


def test_clip_command_learns_and_saves_a_transformers_clip(tmp_path):
    import transformers as tf

    from lmforge.formats.hf_vision import load_clip

    out = tmp_path / "run"
    result = run_cli("clip", "--out", str(out), "--steps", "300", "--train-per-class", "20",
                     "--test-per-class", "5", timeout=300)
    assert result.returncode == 0, result.stderr
    found = re.search(r"before ([\d.]+)% after ([\d.]+)%", result.stdout)
    before, after = float(found[1]), float(found[2])
    assert before < 15 and after >= 20, result.stdout  # 20 classes: chance is 5%
    summary = json.loads((out / "summary.json").read_text())
    assert summary["after"] * 100 == round(after, 1) or abs(summary["after"] * 100 - after) < 0.06
    assert len((out / "log.jsonl").read_text().splitlines()) == 300

    ours = load_clip(out / "model")
    ref = tf.CLIPModel.from_pretrained(out / "model").eval()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours.image_features(pixels), ref.get_image_features(pixel_values=pixels)
                                   .pooler_output, atol=1e-4, rtol=0)


def test_clip_command_user_errors_are_one_line():
    assert_user_error(run_cli("clip", "--loss", "hinge"), "hinge", "infonce, sigmoid")
    assert_user_error(run_cli("clip", "--image-size", "30", "--patch-size", "8"), "image_size=30", "patch_size=8")
