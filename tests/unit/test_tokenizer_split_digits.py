"""`train_tokenizer(split_digits=True)` / `lmforge tokenizer train --split-digits`: every digit is a token of its own
(as the Llama, SmolLM and Qwen tokenizers split numbers), text still round-trips, and wordpiece is refused."""

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.common.errors import LmforgeError
from lmforge.tokenizer import Tokenizer, train_tokenizer
from tests.cli_util import assert_user_error
from tests.inprocess_cli import run_main

# Sums to merge: without split_digits, "57", "+8=65" and the like become tokens of their own.
CORPUS = [f"Start at {a}, add {b}.\n{a}+{b}={a + b}\n{a + b}+{b}={a + 2 * b}\n" for a in range(10, 90) for b in (3, 8)]
TEXT = st.text(alphabet=string.ascii_letters + string.digits + " +=,.\n", max_size=60)


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    return {t: train_tokenizer(CORPUS * 3, type=t, vocab_size=420, split_digits=True) for t in ("byte-bpe", "bpe",
                                                                                              "unigram")}


def test_without_the_option_the_sums_merge_into_multi_digit_tokens():
    tok = train_tokenizer(CORPUS * 3, type="byte-bpe", vocab_size=420)
    pieces = [tok.decode([i]) for i in tok.encode_plain("57+8=65")]
    assert any(sum(c.isdigit() for c in p) > 1 for p in pieces), pieces


@settings(max_examples=60, deadline=None)
@given(text=TEXT)
def test_every_digit_is_its_own_token_and_text_round_trips(tokenizers, text):
    for kind, tok in tokenizers.items():
        ids = tok.encode_plain(text)
        pieces = [tok.decode([i]) for i in ids]
        for piece in pieces:  # a token holding a digit is that digit alone
            assert not any(c.isdigit() for c in piece) or piece.strip("▁ ") in string.digits, (kind, piece)
        assert sum(p.count(d) for p in pieces for d in string.digits) == sum(c.isdigit() for c in text)
        assert tok.decode(ids) == text, kind


def test_the_saved_tokenizer_keeps_splitting(tokenizers, tmp_path):
    tokenizers["byte-bpe"].save(tmp_path)
    tok = Tokenizer.from_dir(tmp_path)
    assert [tok.decode([i]) for i in tok.encode_plain("65+3=68")] == ["6", "5", "+", "3", "=", "6", "8"]


def test_wordpiece_and_a_non_bool_are_refused():
    with pytest.raises(LmforgeError, match="wordpiece"):
        train_tokenizer(CORPUS, type="wordpiece", vocab_size=400, split_digits=True)
    with pytest.raises(LmforgeError, match="split_digits must be True or False"):
        train_tokenizer(CORPUS, type="bpe", vocab_size=400, split_digits="yes")


def test_the_command_splits_digits(tmp_path, capsys):
    corpus = tmp_path / "sums.txt"
    corpus.write_text("".join(CORPUS * 3))
    result = run_main(capsys, "tokenizer", "train", corpus, "--vocab-size", "420", "--split-digits", "-o",
                      tmp_path / "t")
    assert result.returncode == 0, result.stderr
    tok = Tokenizer.from_dir(tmp_path / "t")
    assert [tok.decode([i]) for i in tok.encode_plain("57+8=65")] == ["5", "7", "+", "8", "=", "6", "5"]
    assert_user_error(run_main(capsys, "tokenizer", "train", corpus, "--vocab-size", "420", "--split-digits", "-t",
                               "wordpiece", "-o", tmp_path / "w"), "wordpiece")
