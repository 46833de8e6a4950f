"""Tokenizer training: the four model types learn a vocabulary, keep special tokens whole, and round-trip text."""

import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.common.errors import LmforgeError
from lmforge.tokenizer import DEFAULT_SPECIAL_TOKENS, TOKENIZER_TYPES, train_tokenizer

VOCAB = {"bpe": 400, "byte-bpe": 500, "wordpiece": 400, "unigram": 300}


def make_corpus(n: int = 400, seed: int = 1234) -> list[str]:
    """Deterministic, varied English sentences: capitals, digits, punctuation, a few shapes of sentence."""
    rng = random.Random(seed)
    subjects = [
        "The cat",
        "A dog",
        "My friend",
        "The old man",
        "Our teacher",
        "She",
        "He",
        "The children",
        "A small bird",
        "The engineer",
        "Every student",
        "Nobody",
    ]
    verbs = [
        "sat on",
        "looked at",
        "walked to",
        "wrote about",
        "talked with",
        "thought about",
        "jumped over",
        "built",
        "painted",
        "found",
        "remembered",
        "carried",
    ]
    objects = [
        "the mat",
        "a river",
        "the red house",
        "an interesting book",
        "the tall tree",
        "three apples",
        "the quiet garden",
        "a new machine",
        "the long letter",
        "two bright lamps",
    ]
    tails = [
        ".",
        "!",
        "?",
        ", and then went home.",
        " yesterday.",
        " in 1999.",
        " before 7 o'clock.",
        ", but it was raining.",
        " (twice).",
        "; nobody knew why.",
    ]
    lines = []
    for _ in range(n):
        shape = rng.random()
        sentence = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(tails)}"
        if shape < 0.2:
            sentence = f'"{sentence}" said {rng.choice(["Anna", "Ben", "Chloe", "David"])}.'
        elif shape < 0.35:
            sentence += f" It cost ${rng.randint(1, 500)}.{rng.randint(10, 99)} and took {rng.randint(2, 59)} minutes."
        lines.append(sentence)
    return lines


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module")
def trained(corpus):
    return {kind: train_tokenizer(corpus, type=kind, vocab_size=VOCAB[kind]) for kind in TOKENIZER_TYPES}


HELD_OUT_ASCII = [
    "The cat sat on the mat.",
    "Zebras quietly juggle xylophones, 12345 times!",
    "  leading spaces, double  spaces and trailing   ",
    "tabs\tand\nnewlines\n\nand {braces} [brackets] <angles> ~`^|\\",
]


@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_special_tokens_get_lowest_ids_and_stay_whole(trained, kind):
    tok = trained[kind]
    specials = DEFAULT_SPECIAL_TOKENS[kind]
    assert [tok.token_to_id(t) for t in specials] == list(range(len(specials)))
    for i, token in enumerate(specials):
        assert tok.encode(f"x {token} y", add_special_tokens=False).count(i) == 1
    assert tok.vocab_size <= VOCAB[kind]
    assert tok.vocab_size > len(specials) + 50  # it learned merges, not just the alphabet


def test_custom_special_tokens_keep_their_order(corpus):
    specials = ["<pad>", "<|user|>", "<unk>", "<|bot|>"]
    tok = train_tokenizer(corpus, type="bpe", vocab_size=300, special_tokens=specials)
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2, 3]
    assert (tok.pad_token, tok.unk_token, tok.bos_token, tok.eos_token) == ("<pad>", "<unk>", None, None)
    assert tok.encode("<|user|>hi<|bot|>", add_special_tokens=False)[0] == 1


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_metaspace_types_round_trip_ascii(trained, corpus, kind):
    tok = trained[kind]
    for text in corpus[:50] + HELD_OUT_ASCII + [string.printable]:
        ids = tok.encode(text)
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_metaspace_types_lose_unseen_characters_to_unk(trained, kind):
    tok = trained[kind]
    ids = tok.encode("café 猫")
    assert tok.unk_token_id in ids
    assert tok.decode(ids, skip_special_tokens=True) == "caf "


def tokens_per_char(tok, lines):
    return sum(len(tok.encode(line, add_special_tokens=False)) for line in lines) / sum(len(line) for line in lines)


def test_training_compresses_text_and_more_merges_compress_more(trained, corpus):
    # One token per character is what an untrained (alphabet-only) vocabulary gives.
    limits = {"bpe": 0.3, "byte-bpe": 0.4, "wordpiece": 0.4, "unigram": 0.6}
    for kind, limit in limits.items():
        assert tokens_per_char(trained[kind], corpus) < limit, kind
    smaller = train_tokenizer(corpus, type="bpe", vocab_size=300)
    assert tokens_per_char(trained["bpe"], corpus) < tokens_per_char(smaller, corpus)


UNICODE_SAMPLES = [
    "Hello, world!",
    "中文字符测试：你好世界。",
    "emoji 🐱🚀👩‍👩‍👧 and flags 🇫🇷",
    "tabs\tnew\nlines\r\n  many    spaces  ",
    "Ünïcödé àccents ß ﬁ Ω ∑ √ ∞ — “quotes”",
    "\x00\x01 control \u200b zero-width \ufeff",
    "",
]


@pytest.mark.parametrize("pattern", ["gpt2", "llama3"])
def test_byte_bpe_round_trips_any_unicode(corpus, pattern):
    tok = train_tokenizer(corpus + UNICODE_SAMPLES[:3], type="byte-bpe", vocab_size=500, pattern=pattern)
    rng = random.Random(7)
    planes = [(0x20, 0x7F), (0xA0, 0x2FF), (0x370, 0x3FF), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0x0, 0x20)]
    randoms = ["".join(chr(rng.randint(*rng.choice(planes))) for _ in range(rng.randint(1, 40))) for _ in range(200)]
    for text in UNICODE_SAMPLES + randoms:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_byte_bpe_round_trip_property(trained, text):
    tok = trained["byte-bpe"]
    assert tok.decode(tok.encode(text)) == text


def test_llama3_pattern_splits_numbers_in_threes(corpus):
    tok = train_tokenizer(corpus, type="byte-bpe", vocab_size=600, pattern="llama3")
    pieces = [p for p, _ in tok.backend.pre_tokenizer.pre_tokenize_str("In 1234567 ways")]
    assert pieces == ["In", "Ġ", "123", "456", "7", "Ġways"]
    gpt2 = train_tokenizer(corpus, type="byte-bpe", vocab_size=600)
    assert [p for p, _ in gpt2.backend.pre_tokenizer.pre_tokenize_str("In 1234567 ways")] == [
        "In",
        "Ġ1234567",
        "Ġways",
    ]


def test_byte_bpe_defaults_to_chatml(trained):
    tok = trained["byte-bpe"]
    assert tok.eos_token == "<|endoftext|>"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_wordpiece_is_bert_style(trained, corpus):
    tok = trained["wordpiece"]
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    vocab = tok.get_vocab()
    assert any(t.startswith("##") for t in vocab)
    for text in corpus[:60]:
        ids = tok.encode(text)
        assert ids[0] == cls_id and ids[-1] == sep_id
        assert tok.unk_token_id not in ids  # every word of the corpus is covered
        assert all(tok.id_to_token(i) in vocab for i in ids)
        # The WordPiece decoder glues "##" pieces and removes the space before punctuation (BERT clean-up).
        expected = " ".join(text.split())
        decoded = tok.decode(ids, skip_special_tokens=True)
        assert decoded.replace(" ", "") == expected.replace(" ", "")
        if not any(c in text for c in "\"'($;"):
            assert decoded == expected


def test_files_and_texts_train_the_same_vocabulary(tmp_path, corpus):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("\n".join(corpus[:200]) + "\n", encoding="utf-8")
    second.write_text("\n".join(corpus[200:]) + "\n", encoding="utf-8")
    from_texts = train_tokenizer(corpus, type="bpe", vocab_size=300)
    from_files = train_tokenizer(files=[str(first), second], type="bpe", vocab_size=300)
    from_paths = train_tokenizer([first, second], type="bpe", vocab_size=300)
    assert from_files.get_vocab() == from_texts.get_vocab() == from_paths.get_vocab()


def test_generator_input_is_accepted(corpus):
    tok = train_tokenizer((line for line in corpus), type="unigram", vocab_size=300)
    assert tok.decode(tok.encode(corpus[0])) == corpus[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "sentencepiece", "vocab_size": 300}, "allowed: bpe, byte-bpe, wordpiece, unigram"),
        ({"type": "bpe", "vocab_size": 0}, "vocab_size must be an integer above"),
        ({"type": "bpe", "vocab_size": -5}, "got -5"),
        ({"type": "bpe", "vocab_size": "300"}, "got '300'"),
        ({"type": "bpe", "vocab_size": True}, "got True"),
        ({"type": "byte-bpe", "vocab_size": 200}, "above 259"),
        ({"type": "bpe", "vocab_size": 300, "min_frequency": 0}, "min_frequency"),
        ({"type": "byte-bpe", "vocab_size": 300, "pattern": "gpt4"}, "allowed: gpt2, llama3"),
        ({"type": "bpe", "vocab_size": 300, "special_tokens": ["<s>", "</s>"]}, "needs an unknown token"),
        ({"type": "bpe", "vocab_size": 300, "special_tokens": ["<unk>", "<unk>"]}, "more than once"),
        ({"type": "bpe", "vocab_size": 300, "special_tokens": "<unk>"}, "list of non-empty strings"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(LmforgeError, match=message.replace("$", r"\$").replace("(", r"\(")):
        train_tokenizer(["some text here"], **kwargs)


def test_bad_inputs_raise_clear_errors(tmp_path):
    missing = tmp_path / "nowhere" / "corpus.txt"
    with pytest.raises(LmforgeError, match="not found: .*nowhere.*corpus.txt"):
        train_tokenizer(files=[missing], type="bpe", vocab_size=300)
    with pytest.raises(LmforgeError, match="not a file"):
        train_tokenizer(files=[tmp_path], type="bpe", vocab_size=300)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café au lait\n".encode("latin-1"))
    with pytest.raises(LmforgeError, match="cannot read the training files .*latin1.txt.*UTF-8"):
        train_tokenizer(files=[latin1], type="bpe", vocab_size=300)
    with pytest.raises(LmforgeError, match="not one string"):
        train_tokenizer("just one string", type="bpe", vocab_size=300)
    with pytest.raises(LmforgeError, match="must be strings, got int"):
        train_tokenizer(["fine", 42], type="bpe", vocab_size=300)
    with pytest.raises(LmforgeError, match="empty"):
        train_tokenizer(["", ""], type="bpe", vocab_size=300)
    with pytest.raises(LmforgeError, match="nothing to train on"):
        train_tokenizer(type="bpe", vocab_size=300)
    with pytest.raises(LmforgeError, match="not both"):
        train_tokenizer(["a"], files=["b"], type="bpe", vocab_size=300)
