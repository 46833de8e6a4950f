"""T5's SentencePiece Unigram tokenizer in GGUF (`tokenizer.ggml.model` "t5"): pieces with their log-probability
scores, no merges, an optional SentencePiece precompiled character map, `</s>` appended to every encoding.

Read back as transformers' GGUF loader builds it (its T5Tokenizer): Unigram over (piece, score), whitespace split
then `▁` prepended to every word, the first 100 `[PADn]` placeholders llama.cpp's converter writes for T5's sentinel
ids renamed `<extra_id_99>` ... `<extra_id_0>`. That naming is right for T5's layout (100 sentinels after the
pieces, highest first); the export writes sentinels as placeholders too, so such a tokenizer round-trips. The
precompiled map, which transformers skips, is applied when the file has one (the original normalizer; llama.cpp
applies it too).
"""

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import Unigram

from lmforge.common.errors import LmforgeError

# llama.cpp's token types (gguf_tokenizer has the same; repeated here to keep this file free of a cycle)
NORMAL, UNKNOWN, CONTROL, UNUSED = 1, 2, 3, 5
SENTINELS = 100  # T5's extra ids
_PLACEHOLDER = re.compile(r"\[PAD\d+\]")
_SENTINEL = re.compile(r"<extra_id_\d+>")


def sentinel_names(tokens: list[str]) -> list[str]:
    """`tokens` with the first 100 `[PADn]` placeholders named `<extra_id_N>` (highest N first), as transformers."""
    tokens = list(tokens)
    blanks = [i for i, token in enumerate(tokens) if _PLACEHOLDER.fullmatch(token)][:SENTINELS]
    for offset, index in enumerate(blanks):
        tokens[index] = f"<extra_id_{SENTINELS - 1 - offset}>"
    return tokens


def unigram_backend(fields: Mapping[str, Any], tokens: list[str]) -> Tokenizer:
    """The `tokenizers` Unigram a "t5" GGUF tokenizer describes (special tokens are added by the caller)."""
    scores = fields.get("tokenizer.ggml.scores")
    if scores is None or len(scores) != len(tokens):
        raise LmforgeError(f"a 't5' (Unigram) GGUF tokenizer needs one tokenizer.ggml.scores entry per token "
                           f"({len(tokens)}); got {'none' if scores is None else len(scores)}")
    unk_id = fields.get("tokenizer.ggml.unknown_token_id", 2)
    tokenizer = Tokenizer(Unigram([(token, float(score)) for token, score in zip(tokens, scores, strict=True)],
                                  unk_id=unk_id, byte_fallback=False))
    if charsmap := fields.get("tokenizer.ggml.precompiled_charsmap"):
        tokenizer.normalizer = normalizers.Precompiled(bytes(charsmap))
    prepend = "always" if fields.get("tokenizer.ggml.add_space_prefix", True) else "never"
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend)])
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend)
    return tokenizer


def add_unigram_metadata(writer, tokenizer, vocab_size: int) -> None:
    """`tokenizer.ggml.*` keys of a Unigram tokenizer, as convert_hf_to_gguf.py's T5Model writes them."""
    spec = json.loads(tokenizer.backend.to_str())
    pieces = spec["model"]["vocab"]
    unk_id = spec["model"].get("unk_id")
    special = {added["id"] for added in spec.get("added_tokens") or [] if added.get("special")}
    # T5's sentinels are not SentencePiece pieces: llama.cpp's converter writes them as `[PADn]` placeholders, which
    # transformers (and sentinel_names) name back in order; so does this export, and it pads the vocabulary the same
    tokens = [f"[PAD{i}]" if _SENTINEL.fullmatch(piece) else piece for i, (piece, _) in enumerate(pieces)]
    tokens += [f"[PAD{i}]" for i in range(len(pieces), vocab_size)]
    scores = [float(score) for _, score in pieces] + [-1000.0] * (len(tokens) - len(pieces))
    types = [UNUSED if _PLACEHOLDER.fullmatch(token) else UNKNOWN if i == unk_id else CONTROL if i in special
             else NORMAL for i, token in enumerate(tokens[:len(pieces)])]
    writer.add_tokenizer_model("t5")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types + [UNUSED] * (len(tokens) - len(pieces)))
    writer.add_add_space_prefix(_prepends_space(spec.get("pre_tokenizer")))
    writer.add_remove_extra_whitespaces(True)
    if charsmap := _precompiled_charsmap(spec.get("normalizer")):
        writer.add_precompiled_charsmap(charsmap)
    for token, adder in ((tokenizer.eos_token, writer.add_eos_token_id), (tokenizer.pad_token, writer.add_pad_token_id),
                         (tokenizer.unk_token, writer.add_unk_token_id)):
        if token is not None:
            adder(tokenizer.backend.token_to_id(token))
    probe = tokenizer.backend.encode("a").ids  # does the tokenizer end every encoding with EOS (T5's does)?
    eos = tokenizer.backend.token_to_id(tokenizer.eos_token) if tokenizer.eos_token else None
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(bool(probe) and eos is not None and probe[-1] == eos)


def _prepends_space(pre: dict | None) -> bool:
    steps = (pre.get("pretokenizers") or []) if pre and pre.get("type") == "Sequence" else [pre] if pre else []
    return any(step.get("type") == "Metaspace" and step.get("prepend_scheme", "always") != "never" for step in steps)


def _precompiled_charsmap(normalizer: dict | None) -> bytes | None:
    if not normalizer:
        return None
    if normalizer.get("type") == "Precompiled" and normalizer.get("precompiled_charsmap"):
        return base64.b64decode(normalizer["precompiled_charsmap"])
    for step in normalizer.get("normalizers") or []:
        if found := _precompiled_charsmap(step):
            return found
    return None
