"""Sliding-window perplexity against a direct computation with transformers' model on the same tokens."""

import math

import pytest
import torch

import lmforge
from lmforge.common.errors import LmforgeError
from lmforge.train.eval_ppl import perplexity, sliding_window_nll, windows
from tests.hf_models import tiny_hf_model
from tests.tiny_lm import tiny_tokenizer

TEXT = ("the cat sat on the mat. the dog sat on the log. hello world, hello there! " * 6
        + "a stop string may span tokens: END OF ANSWER. café, naïve, 東京. " * 4)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny random HF Llama saved with the tiny tokenizer: (directory, transformers model)."""
    path = tmp_path_factory.mktemp("tiny_hf")
    torch.manual_seed(1)
    hf = tiny_hf_model("llama", tie=False, vocab_size=320).eval()
    hf.save_pretrained(path)
    tiny_tokenizer().save(path)
    return path, hf


def hf_reference(hf, ids, seq_len, stride):
    """The loop of the Hugging Face doc "Perplexity of fixed-length models"; the token count is taken after the
    shift (the doc subtracts one per window even when that label was already masked)."""
    ids = torch.tensor([ids])
    n = ids.size(1)
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + seq_len, n)
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target = input_ids.clone()
        target[:, :-trg_len] = -100
        with torch.no_grad():
            loss = hf(input_ids, attention_mask=torch.ones_like(input_ids), labels=target).loss
        valid = int((target[:, 1:] != -100).sum())
        nll_sum += float(loss) * valid
        n_tokens += valid
        prev_end = end
        if end == n:
            break
    return nll_sum / n_tokens, n_tokens


@pytest.mark.parametrize(("seq_len", "stride", "batch"), [(64, 64, 1), (64, 16, 3), (48, 20, 2), (1000, 500, 1)])
def test_matches_transformers_sliding_window(hf_dir, seq_len, stride, batch):
    path, hf = hf_dir
    lm = lmforge.load(path)
    result = perplexity(lm.model, lm.tokenizer, TEXT, seq_len=seq_len, stride=stride, batch_size=batch)
    ref_nats, ref_tokens = hf_reference(hf, lm.tokenizer.encode(TEXT), seq_len, stride)
    assert result["tokens"] == ref_tokens
    assert result["nats_per_token"] == pytest.approx(ref_nats, rel=1e-4)
    assert result["perplexity"] == pytest.approx(math.exp(ref_nats), rel=1e-4)


def test_one_window_equals_full_sequence_cross_entropy(hf_dir):
    path, hf = hf_dir
    lm = lmforge.load(path)
    ids = torch.tensor([lm.tokenizer.encode(TEXT)])
    with torch.no_grad():
        logits = hf(ids, attention_mask=torch.ones_like(ids)).logits[0, :-1]
    direct = float(torch.nn.functional.cross_entropy(logits, ids[0, 1:]))
    nll, count = sliding_window_nll(lm.model, ids[0], seq_len=ids.size(1), stride=ids.size(1))
    assert count == ids.size(1) - 1
    assert nll / count == pytest.approx(direct, rel=1e-4)


def test_windows_score_each_token_once_with_enough_context():
    for n, seq_len, stride in [(100, 32, 8), (97, 40, 40), (10, 64, 16), (257, 50, 7)]:
        scored = []
        for begin, end, first in windows(n, seq_len, stride):
            assert end - begin <= seq_len
            if begin > 0:
                assert first - begin >= seq_len - stride or end == n  # context of the first scored token
            scored += range(first, end)
        if stride < seq_len:
            assert scored == list(range(1, n))


def test_bad_arguments_are_named():
    with pytest.raises(LmforgeError, match="stride"):
        windows(100, 16, 32)


def test_cli_prints_json(hf_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from lmforge.cli.main import app

    path, hf = hf_dir
    (tmp_path / "t.txt").write_text(TEXT)
    result = CliRunner().invoke(app, ["eval", "ppl", str(path), "--text", str(tmp_path / "t.txt"), "--seq-len", "64",
                                      "--stride", "16", "--batch", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    ref_nats, ref_tokens = hf_reference(hf, lmforge.load(path).tokenizer.encode(TEXT), 64, 16)
    assert data["tokens"] == ref_tokens and data["nats_per_token"] == pytest.approx(ref_nats, rel=1e-4)
