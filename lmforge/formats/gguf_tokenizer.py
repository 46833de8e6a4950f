"""Rebuild a Hugging Face `tokenizers` tokenizer from the vocabulary stored in a GGUF file's metadata.

A GGUF carries no tokenizer.json, only llama.cpp's keys (tokens, merges, scores, token types, pre-tokenizer
name). Byte-level BPE (`gpt2`), SentencePiece BPE (`llama`) and T5's Unigram (`t5`, gguf_tokenizer_t5.py) are
rebuilt as transformers' GGUF converter does.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_tokenizer_t5 import sentinel_names, unigram_backend

# llama.cpp's `llama_token_type` values, as stored in tokenizer.ggml.token_type.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

SUPPORTED_TOKENIZER_MODELS = ("gpt2", "llama", "t5")

_GPT2_DEFAULT = ("default", "gpt2")
# SmolLM / StarCoder were trained with every digit split off before the GPT-2 regex runs.
_DIGITS_THEN_GPT2 = ("smollm", "starcoder")
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_NAMES = ("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx", "falcon3", "pixtral")
_QWEN2_NAMES = ("qwen2", "deepseek-r1-qwen", "megrez")
SUPPORTED_PRE_TOKENIZERS = _GPT2_DEFAULT + _DIGITS_THEN_GPT2 + _LLAMA3_NAMES + _QWEN2_NAMES

_SPECIAL_IDS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table that byte-level BPE vocabularies are spelled in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def build_tokenizer(fields: Mapping[str, Any]) -> tuple[Tokenizer, dict]:
    """(tokenizer, tokenizer_config) from a GGUF's `tokenizer.*` metadata, given as plain Python values."""
    kind = fields.get("tokenizer.ggml.model")
    if kind not in SUPPORTED_TOKENIZER_MODELS:
        raise LmforgeError(
            f"unsupported GGUF tokenizer model {kind!r} (tokenizer.ggml.model); "
            f"supported: {', '.join(SUPPORTED_TOKENIZER_MODELS)}"
        )
    tokens = list(fields.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise LmforgeError("GGUF file has no tokenizer.ggml.tokens; a vocabulary is required to build a tokenizer")
    types = list(fields.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens))
    if len(types) != len(tokens):
        raise LmforgeError(
            f"tokenizer.ggml.token_type has {len(types)} entries but tokenizer.ggml.tokens has {len(tokens)}"
        )
    if kind == "t5":  # T5's sentinels: llama.cpp's `[PADn]` placeholders, special tokens as transformers names them
        named = sentinel_names(tokens)
        types = [TOKEN_CONTROL if new != old else kind_ for new, old, kind_ in zip(named, tokens, types, strict=True)]
        tokens = named
    config = tokenizer_config(fields, tokens, add_bos_default=kind == "llama", add_eos_default=kind == "t5")
    if kind == "t5":
        tokenizer = unigram_backend(fields, tokens)
        _add_special_tokens(tokenizer, tokens, types, keep=lambda token: True)
    else:
        builder = _byte_level_bpe if kind == "gpt2" else _sentencepiece_bpe
        tokenizer = builder(fields, tokens, types)
    tokenizer.post_processor = _post_processor(fields, config, byte_level=kind == "gpt2")
    return tokenizer, config


def tokenizer_config(fields: Mapping[str, Any], tokens: Sequence[str], add_bos_default: bool,
                     add_eos_default: bool = False) -> dict:
    """Special token strings, chat template and BOS/EOS flags, as a tokenizer_config.json would hold them."""
    config: dict[str, Any] = {}
    for name, key in _SPECIAL_IDS.items():
        token_id = fields.get(key)
        if token_id is not None and not 0 <= token_id < len(tokens):
            raise LmforgeError(f"{key} = {token_id} is outside the vocabulary (0..{len(tokens) - 1})")
        config[name] = tokens[token_id] if token_id is not None else None
    config["chat_template"] = fields.get("tokenizer.chat_template")
    config["add_bos_token"] = bool(fields.get("tokenizer.ggml.add_bos_token", add_bos_default))
    config["add_eos_token"] = bool(fields.get("tokenizer.ggml.add_eos_token", add_eos_default))
    return config


def _merges(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    merges = []
    for merge in fields.get("tokenizer.ggml.merges") or []:
        parts = merge.split(" ")
        if len(parts) != 2:
            raise LmforgeError(f"malformed merge {merge!r} in tokenizer.ggml.merges; expected 'left right'")
        merges.append((parts[0], parts[1]))
    return merges


def _byte_level_pre_tokenizer(pre: str) -> tuple[pre_tokenizers.PreTokenizer, bool]:
    """The pre-tokenizer a `tokenizer.ggml.pre` name stands for, and whether BPE should ignore merges."""
    if pre in _GPT2_DEFAULT:
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False
    if pre in _DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        ), False
    split = _LLAMA3_SPLIT if pre in _LLAMA3_NAMES else _QWEN2_SPLIT if pre in _QWEN2_NAMES else None
    if split is None:
        raise LmforgeError(
            f"unsupported GGUF pre-tokenizer {pre!r} (tokenizer.ggml.pre); "
            f"supported: {', '.join(SUPPORTED_PRE_TOKENIZERS)}"
        )
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    ), pre in _LLAMA3_NAMES  # Llama 3 (tokenizer.json and llama.cpp) takes a pre-token found whole in the vocab


def _byte_level_bpe(fields: Mapping[str, Any], tokens: list[str], types: list[int]) -> Tokenizer:
    """GPT-2 style byte-level BPE; tokens outside the byte alphabet are re-spelled byte by byte."""
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {}
    for index, token in enumerate(tokens):
        spelled = token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode("utf-8"))
        vocab[spelled] = index
    pre_tokenizer, ignore_merges = _byte_level_pre_tokenizer(fields.get("tokenizer.ggml.pre") or "default")
    model = BPE(
        vocab=vocab,
        merges=_merges(fields),
        dropout=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
        ignore_merges=ignore_merges,
    )
    tokenizer = Tokenizer(model)
    if fields.get("tokenizer.ggml.pre") in _QWEN2_NAMES:
        tokenizer.normalizer = normalizers.NFC()  # as Qwen2's own tokenizer.json
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    # A control token spelled outside the byte alphabet is a llama.cpp mislabel; adding it would grow the vocab.
    _add_special_tokens(tokenizer, tokens, types, keep=lambda token: set(token) <= alphabet)
    return tokenizer


def merges_from_scores(tokens: Sequence[str], scores: Sequence[float]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary: every split of a piece into two known pieces,
    ranked by the piece's score (best first), as transformers' `generate_merges` does."""
    vocab = {token: index for index, token in enumerate(tokens)}
    ranked = []
    for piece, score in dict(zip(tokens, scores, strict=True)).items():
        local = [
            (piece[:k], piece[k:], score) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab
        ]
        local.sort(key=lambda merge: (vocab[merge[0]], vocab[merge[1]]))
        ranked.extend(local)
    ranked.sort(key=lambda merge: (merge[2], len(merge[0]), len(merge[1])), reverse=True)
    return [(left, right) for left, right, _ in ranked]


def _sentencepiece_bpe(fields: Mapping[str, Any], tokens: list[str], types: list[int]) -> Tokenizer:
    """SentencePiece BPE: `▁` for spaces, `<0xNN>` byte-fallback tokens, merges ranked by piece score."""
    merges = _merges(fields)
    if not merges:
        scores = fields.get("tokenizer.ggml.scores")
        if scores is None or len(scores) != len(tokens):
            raise LmforgeError(
                "a 'llama' (SentencePiece) GGUF tokenizer needs tokenizer.ggml.merges or one "
                f"tokenizer.ggml.scores entry per token ({len(tokens)}); got "
                f"{'none' if scores is None else len(scores)}"
            )
        merges = merges_from_scores(tokens, scores)
    unk_id = fields.get("tokenizer.ggml.unknown_token_id")
    model = BPE(
        vocab={token: index for index, token in enumerate(tokens)},
        merges=merges,
        dropout=None,
        unk_token=tokens[unk_id] if unk_id is not None else None,
        fuse_unk=True,
        byte_fallback=True,
    )
    tokenizer = Tokenizer(model)
    add_prefix = bool(fields.get("tokenizer.ggml.add_space_prefix", True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if add_prefix else "never", split=False
    )
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tokenizer.decoder = decoders.Sequence(steps)
    _add_special_tokens(tokenizer, tokens, types, keep=lambda token: True)
    return tokenizer


def _add_special_tokens(tokenizer: Tokenizer, tokens: list[str], types: list[int], keep) -> None:
    """CONTROL / UNKNOWN tokens become special added tokens and USER_DEFINED ones plain added tokens, so
    `<|im_start|>` or `<think>` encode as one id instead of being cut into pieces (llama.cpp matches them whole)."""
    special, user = [], []
    for token, token_type in zip(tokens, types, strict=True):
        if not keep(token):
            continue
        if token_type in (TOKEN_CONTROL, TOKEN_UNKNOWN):
            special.append(AddedToken(token, special=True, normalized=False))
        elif token_type == TOKEN_USER_DEFINED:
            user.append(AddedToken(token, special=False, normalized=False))
    tokenizer.add_special_tokens(special)
    tokenizer.add_tokens(user)


def _post_processor(fields: Mapping[str, Any], config: dict, byte_level: bool) -> processors.PostProcessor | None:
    """Prepend BOS / append EOS when the file asks for it (llama.cpp's add_bos/add_eos flags)."""
    ends = []
    for flag, name in (("add_bos_token", "bos_token"), ("add_eos_token", "eos_token")):
        if config[flag] and config[name] is None:
            raise LmforgeError(f"tokenizer.ggml.{flag} is true but the file names no {name} id")
        ends.append((config[name], fields.get(_SPECIAL_IDS[name])) if config[flag] else None)
    bos, eos = ends
    offsets = processors.ByteLevel(trim_offsets=False) if byte_level else None
    if bos is None and eos is None:
        return offsets

    def sequence(piece: str, type_id: int) -> list[str]:
        return (
            [f"{end[0]}:{type_id}" for end in (bos,) if end]
            + [f"{piece}:{type_id}"]
            + [f"{end[0]}:{type_id}" for end in (eos,) if end]
        )

    template = processors.TemplateProcessing(
        single=sequence("$A", 0),
        pair=sequence("$A", 0) + sequence("$B", 1),
        special_tokens=sorted({end for end in ends if end}),
    )
    return processors.Sequence([offsets, template]) if offsets else template
