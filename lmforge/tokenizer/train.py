"""Train a tokenizer from text with Hugging Face `tokenizers`: BPE, byte-level BPE, WordPiece or Unigram.

Byte-level BPE is the GPT-2 / Llama-3 recipe (Sennrich et al. 2016 BPE over bytes); WordPiece is BERT's; Unigram is
Kudo 2018's subword regularisation model with SentencePiece-style Metaspace pre-tokenization.
"""

import os
import string
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as Backend

from lmforge.common.errors import LmforgeError
from lmforge.tokenizer.chat_template import CHATML_TEMPLATE
from lmforge.tokenizer.tokenizer import Tokenizer

TOKENIZER_TYPES = ("bpe", "byte-bpe", "wordpiece", "unigram")

DEFAULT_SPECIAL_TOKENS: dict[str, tuple[str, ...]] = {
    "bpe": ("<unk>", "<s>", "</s>", "<pad>"),
    "byte-bpe": ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    "wordpiece": ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"),
    "unigram": ("<unk>", "<s>", "</s>", "<pad>"),
}

# Pre-tokenization regexes for byte-level BPE. "gpt2" is built into the ByteLevel pre-tokenizer; "llama3" is the
# tiktoken cl100k pattern Llama 3 uses (numbers split in groups of at most three digits).
BYTE_BPE_PATTERNS = ("gpt2", "llama3")
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# bpe, wordpiece and unigram always hold every printable ASCII character (space becomes "▁" or a split), so
# ordinary ASCII text never meets the unknown token, whatever the corpus.
METASPACE = "▁"
ASCII_ALPHABET = sorted(set(string.printable) - {" "}) + [METASPACE]

# Which special token plays which role, by the usual spellings.
_ROLE_CANDIDATES = {
    "unk_token": ("<unk>", "[UNK]", "<|unk|>"),
    "bos_token": ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"),
    "eos_token": ("</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"),
    "pad_token": ("<pad>", "[PAD]", "<|pad|>"),
}


def train_tokenizer(
    texts_or_files: Iterable[str] | Iterable[os.PathLike] | None = None,
    *,
    type: str,
    vocab_size: int,
    special_tokens: list[str] | None = None,
    min_frequency: int = 2,
    show_progress: bool = False,
    files: list[str | os.PathLike] | None = None,
    pattern: str = "gpt2",
    split_digits: bool = False,
) -> Tokenizer:
    """Train a new tokenizer of `type` ("bpe", "byte-bpe", "wordpiece", "unigram") with `vocab_size` entries.

    Input: an iterable of strings (each a document or line), or text files given as `files=[...]` (or as
    `pathlib.Path` objects in the first argument). `special_tokens` get ids 0..n-1 in the given order, are never
    split, and default per type (`DEFAULT_SPECIAL_TOKENS`). The returned Tokenizer names its unk/bos/eos/pad
    tokens by their usual spellings, and gets the ChatML template when `<|im_start|>`/`<|im_end|>` are special.

    What decode(encode(x)) gives back:
      - "byte-bpe": exactly x, for any Unicode text (ByteLevel, `pattern` "gpt2" or "llama3").
      - "bpe" / "unigram": exactly x when all of x's characters are printable ASCII, tab, newline or were seen in
        training (Metaspace with prepend_scheme "never": spaces, leading ones included, survive); an unseen
        character becomes the unknown token and is lost.
      - "wordpiece": BERT-style, cased; x with whitespace collapsed to single spaces and no space before
        punctuation (the WordPiece decoder's clean-up), again if no character is unknown.
    `min_frequency` is the BPE/WordPiece merge threshold; Unigram has none and does not use it.
    `split_digits`: every digit is a token of its own ("2026" -> "2", "0", "2", "6"), as the Llama, SmolLM and Qwen
    tokenizers split numbers, so a model sees the digits it has to add; decode(encode(x)) is unchanged (not for
    wordpiece, refused).
    """
    if type not in TOKENIZER_TYPES:
        raise LmforgeError(f"unknown tokenizer type {type!r}; allowed: {', '.join(TOKENIZER_TYPES)}")
    if special_tokens is None:
        special_tokens = list(DEFAULT_SPECIAL_TOKENS[type])
    _check_special_tokens(special_tokens)
    alphabet_size = 256 if type == "byte-bpe" else len(ASCII_ALPHABET)
    floor = len(special_tokens) + alphabet_size
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= floor:
        raise LmforgeError(
            f"vocab_size must be an integer above {floor} for {type!r} ({len(special_tokens)} special tokens + "
            f"{alphabet_size}-symbol alphabet), got {vocab_size!r}"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise LmforgeError(f"min_frequency must be an integer >= 1, got {min_frequency!r}")
    if not isinstance(split_digits, bool):
        raise LmforgeError(f"split_digits must be True or False, got {split_digits!r}")
    if split_digits and type == "wordpiece":  # its decoder would join the digits of a number with spaces
        raise LmforgeError("split_digits needs type bpe, byte-bpe or unigram (wordpiece decodes 12 as '1 2')")
    if pattern not in BYTE_BPE_PATTERNS:
        raise LmforgeError(f"unknown byte-bpe pattern {pattern!r}; allowed: {', '.join(BYTE_BPE_PATTERNS)}")
    roles = {role: next((t for t in special_tokens if t in names), None) for role, names in _ROLE_CANDIDATES.items()}
    if type != "byte-bpe" and roles["unk_token"] is None:
        raise LmforgeError(
            f"type {type!r} needs an unknown token among special_tokens (one of "
            f"{', '.join(_ROLE_CANDIDATES['unk_token'])}), got {special_tokens}"
        )

    backend, trainer = _build(type, vocab_size, special_tokens, min_frequency, show_progress, roles, pattern)
    if split_digits:  # isolate each digit before the type's own pre-tokenizer (which never joins pre-tokens again)
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), backend.pre_tokenizer]
        )
    texts, paths = _split_inputs(texts_or_files, files)
    if paths is not None:
        try:
            backend.train([str(p) for p in paths], trainer)
        except Exception as err:  # the Rust reader raises a plain Exception, e.g. for non-UTF-8 bytes
            raise LmforgeError(f"cannot read the training files ({', '.join(map(str, paths))}): {err}") from None
    else:
        counter = _CountingIterator(texts)
        backend.train_from_iterator(counter, trainer, length=_length_hint(texts))
        if counter.nonempty == 0:
            raise LmforgeError("the training texts are empty: give at least one non-empty string")

    if type == "wordpiece" and "[CLS]" in special_tokens and "[SEP]" in special_tokens:
        cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
    chat = CHATML_TEMPLATE if {"<|im_start|>", "<|im_end|>"} <= set(special_tokens) else None
    if roles["eos_token"] is None and chat is not None:
        roles["eos_token"] = "<|im_end|>"
    return Tokenizer(backend, chat_template=chat, **roles)


def _build(type, vocab_size, special_tokens, min_frequency, show_progress, roles, pattern):
    """The untrained backend (model, normalizer, pre-tokenizer, decoder) and its trainer for one `type`."""
    common = dict(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=show_progress)
    if type == "byte-bpe":
        backend = Backend(models.BPE())
        if pattern == "llama3":
            backend.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                ]
            )
        else:
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            min_frequency=min_frequency, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **common
        )
        return backend, trainer
    if type == "wordpiece":
        backend = Backend(models.WordPiece(unk_token=roles["unk_token"], continuing_subword_prefix="##"))
        backend.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            min_frequency=min_frequency, initial_alphabet=ASCII_ALPHABET[:-1], continuing_subword_prefix="##", **common
        )
        return backend, trainer
    # bpe and unigram: SentencePiece-style, spaces become "▁" and stay in the tokens; newlines split words.
    if type == "bpe":
        backend = Backend(models.BPE(unk_token=roles["unk_token"]))
        trainer = trainers.BpeTrainer(min_frequency=min_frequency, initial_alphabet=ASCII_ALPHABET, **common)
    else:
        backend = Backend(models.Unigram())
        trainer = trainers.UnigramTrainer(unk_token=roles["unk_token"], initial_alphabet=ASCII_ALPHABET, **common)
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="never"),
        ]
    )
    backend.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="never")
    return backend, trainer


def _check_special_tokens(special_tokens: list[str]) -> None:
    if isinstance(special_tokens, str) or not all(isinstance(t, str) and t for t in special_tokens):
        raise LmforgeError(f"special_tokens must be a list of non-empty strings, got {special_tokens!r}")
    duplicates = sorted({t for t in special_tokens if special_tokens.count(t) > 1})
    if duplicates:
        raise LmforgeError(f"special_tokens lists {duplicates} more than once")


def _split_inputs(texts_or_files, files) -> tuple[Iterable[str] | None, list[Path] | None]:
    """Decide between in-memory texts and files; check every file exists before training starts."""
    if texts_or_files is not None and files is not None:
        raise LmforgeError("give training texts or files=[...], not both")
    if texts_or_files is None and files is None:
        raise LmforgeError("nothing to train on: give an iterable of texts or files=[...]")
    if isinstance(texts_or_files, (str, bytes)):
        raise LmforgeError("texts must be an iterable of strings, not one string (wrap it in a list)")
    if isinstance(texts_or_files, (list, tuple)) and texts_or_files and isinstance(texts_or_files[0], os.PathLike):
        files = list(texts_or_files)
    if files is None:
        return texts_or_files, None
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    paths = [Path(f) for f in files]
    if not paths:
        raise LmforgeError("files=[] is empty: give at least one text file")
    for path in paths:
        if not path.exists():
            raise LmforgeError(f"training file not found: {path}")
        if not path.is_file():
            raise LmforgeError(f"training input is not a file: {path} (expand directories into their files)")
    if sum(p.stat().st_size for p in paths) == 0:
        raise LmforgeError(f"the training files are all empty: {', '.join(map(str, paths))}")
    return None, paths


def _length_hint(texts) -> int | None:
    try:
        return len(texts)
    except TypeError:
        return None


class _CountingIterator:
    """Yields the training texts, checking each is a string and counting the non-empty ones."""

    def __init__(self, texts: Iterable[str]):
        self._texts = iter(texts)
        self.nonempty = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        text = next(self._texts)
        if not isinstance(text, str):
            raise LmforgeError(f"training texts must be strings, got {type(text).__name__}: {text!r:.80}")
        if text:
            self.nonempty += 1
        return text
