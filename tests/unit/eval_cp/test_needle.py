"""Passkey retrieval: stub models with known behaviour give known accuracies; the key sits at the requested depth."""

import re

import pytest

from lmforge.common.errors import LmforgeError
from lmforge.train.needle import (
    FILLER,
    is_correct,
    model_answer,
    passkey_prompt,
    run_passkey,
    write_heatmap,
)
from tests.tiny_lm import tiny_lm, tiny_tokenizer


def oracle(tokenizer):
    """A "model" that reads the key out of the prompt text and answers it."""
    return lambda ids: " " + re.search(r"pass key is (\d+)", tokenizer.decode(ids)).group(1) + "."


def test_always_right_gives_100_and_never_gives_0(tmp_path):
    tok = tiny_tokenizer()
    lengths, depths = [300, 500], [0, 0.25, 0.5, 0.75, 1]
    right = run_passkey(oracle(tok), tok, lengths, depths, trials=3)
    wrong = run_passkey(lambda ids: " I do not remember 12345.", tok, lengths, depths, trials=3)
    assert right["accuracy"] == [[1.0] * 5] * 2 and right["mean_accuracy"] == 1.0
    assert wrong["accuracy"] == [[0.0] * 5] * 2 and wrong["mean_accuracy"] == 0.0
    png = write_heatmap(right, tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_is_lengths_by_depths():
    """A model that only finds keys in the first half of the context: accuracy 1 for depth < 0.5, else 0."""
    tok = tiny_tokenizer()

    def first_half(ids):
        half = tok.decode(ids[: len(ids) // 2])
        found = re.search(r"pass key is (\d+)", half)
        return found.group(1) if found else "none"

    result = run_passkey(first_half, tok, [400, 800, 1200], [0, 0.25, 0.75, 1], trials=2)
    assert result["accuracy"] == [[1.0, 1.0, 0.0, 0.0]] * 3
    assert len(result["records"]) == 3 * 4 * 2


@pytest.mark.parametrize("length", [400, 1000, 3000])
@pytest.mark.parametrize("depth", [0, 0.1, 0.25, 0.5, 0.75, 1])
def test_key_at_requested_depth(length, depth):
    tok = tiny_tokenizer()
    p = passkey_prompt(tok, length, depth, "71432")
    unit = len(tok.encode(FILLER, add_special_tokens=False))
    assert length - unit < len(p.ids) <= length
    text = tok.decode(p.ids)
    assert text.count("The pass key is 71432. Remember it. 71432 is the pass key.") == 1
    assert p.filler_before == round(depth * p.filler_total)
    # the filler sentences before the key, as a share of all of them, is the requested depth (to one unit)
    before = text[: text.index("The pass key is")].count("The grass is green.")
    assert before == p.filler_before
    assert abs(before / p.filler_total - depth) <= 0.5 / p.filler_total + 1e-9
    assert tok.decode(p.ids[p.key_start:]).lstrip().startswith("The pass key is 71432")


def test_is_correct_checks_the_first_number():
    assert is_correct(" 71432. Remember", "71432")
    assert not is_correct(" 7143", "71432") and not is_correct(" 714321", "71432")
    assert not is_correct(" no idea 71432", "12345") and not is_correct("", "71432")


def test_model_answer_runs_a_real_model():
    lm = tiny_lm()
    answer = model_answer(lm.model, lm.tokenizer, max_new_tokens=3)
    assert isinstance(answer(lm.tokenizer.encode("hello world")), str)


def test_too_short_is_an_error():
    with pytest.raises(LmforgeError, match="too short"):
        passkey_prompt(tiny_tokenizer(), 10, 0.5, "12345")
    with pytest.raises(LmforgeError, match="depth"):
        passkey_prompt(tiny_tokenizer(), 500, 1.5, "12345")


def test_cli_writes_json_and_png(tmp_path):
    import json

    import torch
    from typer.testing import CliRunner

    from lmforge.cli.main import app
    from tests.hf_models import tiny_hf_model

    torch.manual_seed(0)
    tiny_hf_model("llama", tie=True, vocab_size=320, max_position_embeddings=1024).save_pretrained(tmp_path / "m")
    tiny_tokenizer().save(tmp_path / "m")
    result = CliRunner().invoke(app, ["eval", "needle", str(tmp_path / "m"), "--lengths", "300,400", "--depths",
                                      "0,1", "--trials", "1", "--max-new-tokens", "2", "--out", str(tmp_path / "o"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "o" / "needle.json").read_text())
    assert len(saved["accuracy"]) == 2 and len(saved["accuracy"][0]) == 2 and len(saved["records"]) == 4
    assert (tmp_path / "o" / "needle.png").read_bytes()[:4] == b"\x89PNG"
