"""Constrained decoding (structured outputs): a grammar, a JSON schema or a Lark grammar, held by each request as
its own matcher, which says before every step which tokens may come next; the sampler masks the others out.

The matcher is llguidance's (the Earley parser + token trie behind llama.cpp's and vLLM's `guidance` backend), picked
over xgrammar and outlines-core by per-token overhead on CPU with SmolLM2's 49k vocabulary
(benchmarks/structured_output.py): it needs no `transformers`, builds a schema in milliseconds and masks in tens of µs.
"""

import json
import weakref
from collections.abc import Sequence

import llguidance
import torch

from lmforge.common.errors import LmforgeError

# Compact JSON (", " and ": ", no free whitespace): a small model given free whitespace may emit newlines forever.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_BIT = torch.arange(8, dtype=torch.uint8)


class GrammarError(LmforgeError):
    """A grammar that cannot be compiled, or a token the grammar refuses."""


def json_schema_grammar(schema: dict | bool) -> str:
    """The llguidance grammar of the JSON documents `schema` accepts (compact separators, no free whitespace)."""
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)
    except (ValueError, TypeError) as err:
        raise GrammarError(f"not a JSON schema: {str(err)[:200]}") from None


def inline_json(schema: dict | bool) -> str:
    """`%json {...}` for a Lark grammar: the schema as a non-terminal, with the same compact JSON options."""
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    return "%json " + json.dumps({**schema, "x-guidance": JSON_OPTIONS}, ensure_ascii=False)


def lark_grammar(text: str) -> str:
    return llguidance.LLMatcher.grammar_from_lark(text)


_VOCABS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def token_vocabulary(tokenizer, vocab_size: int, stop_token_ids: Sequence[int]) -> llguidance.LLTokenizer:
    """llguidance's view of `tokenizer` (the bytes of every token, in a trie), built once per tokenizer, logits width
    and set of stop tokens (about a second for 49k tokens). Ids past the tokenizer are never allowed; the stop
    tokens are allowed exactly where the grammar may end."""
    if tokenizer is None or not hasattr(tokenizer, "backend"):
        raise GrammarError("constrained decoding needs the model's tokenizer")
    stops = tuple(sorted(set(stop_token_ids)))
    if not stops:
        raise GrammarError("constrained decoding needs at least one stop token id (where the grammar may end)")
    cache = _VOCABS.setdefault(tokenizer, {})
    key = (vocab_size, stops)
    if key not in cache:
        try:
            cache[key] = llguidance.LLTokenizer(tokenizer.backend.to_str(), n_vocab=vocab_size, eos_token=list(stops))
        except Exception as err:  # noqa: BLE001 - the Rust side raises plain exceptions for tokenizers it cannot read
            raise GrammarError(f"constrained decoding cannot read this tokenizer: {str(err)[:200]}") from None
    return cache[key]


def check_grammar(grammar: str, tokenizer, vocab_size: int, stop_token_ids: Sequence[int]) -> None:
    """Raise GrammarError naming what is wrong with `grammar` (unsupported schema keyword, Lark syntax...)."""
    vocab = token_vocabulary(tokenizer, vocab_size, stop_token_ids)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, vocab)
    if is_error:
        raise GrammarError(f"cannot compile the grammar: {messages[0][:300]}")


class TokenConstraint:
    """One request's grammar state: `fill` writes the allowed next tokens, `advance` consumes the sampled one."""

    def __init__(self, grammar: str, tokenizer, vocab_size: int, stop_token_ids: Sequence[int]):
        self.vocab_size = vocab_size
        self.matcher = llguidance.LLMatcher(token_vocabulary(tokenizer, vocab_size, stop_token_ids), grammar,
                                            log_level=0)
        if self.matcher.is_error():
            raise GrammarError(f"cannot compile the grammar: {self.matcher.get_error()[:300]}")

    def fill(self, bitmask_row: torch.Tensor) -> None:
        """Write one bit per token (1 = allowed) into a contiguous int32 row of ceil(V / 32) words."""
        self.matcher.unsafe_compute_mask_ptr(bitmask_row.data_ptr(), bitmask_row.numel() * 4)
        if self.matcher.is_error():
            raise GrammarError(f"the grammar matcher failed: {self.matcher.get_error()[:300]}")

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise GrammarError(f"token {token} does not follow the grammar: {self.matcher.get_error()[:300]}")

    @property
    def done(self) -> bool:
        """The grammar is complete and admits nothing more (only a stop token could follow)."""
        return self.matcher.is_stopped()


def token_masks(constraints: Sequence[TokenConstraint | None], vocab_size: int,
                device=None) -> torch.Tensor | None:
    """allowed [B, V] bool for the rows (None: an unconstrained row, all True); None when no row is constrained."""
    rows = [(row, c) for row, c in enumerate(constraints) if c is not None]
    if not rows:
        return None
    bitmask = _full_bitmask(len(constraints), vocab_size)
    for row, constraint in rows:
        constraint.fill(bitmask[row])
    empty = [row for row, _ in rows if not bool(bitmask[row].any())]  # on 1/32 of the mask: cheap
    if empty:
        raise GrammarError(f"the grammar allows no next token for batch row(s) {empty}")
    allowed = _unpack(bitmask, vocab_size)
    return allowed.to(device) if device is not None else allowed


def draft_masks(constraint: TokenConstraint, draft: Sequence[int], vocab_size: int) -> torch.Tensor:
    """Speculative decoding: allowed [k+1, V], row i the mask after the first i of the k draft tokens (the target
    verifies them in one pass). From a draft token the grammar refuses on, rows are left all True: that token has
    probability 0 under its row's mask, so it is rejected and the rows after it are never used. The matcher ends
    where it started (the verified tokens are advanced afterwards)."""
    bitmask = _full_bitmask(len(draft) + 1, vocab_size)
    consumed = 0
    for i in range(len(draft) + 1):
        constraint.fill(bitmask[i])
        if i == len(draft) or constraint.matcher.try_consume_tokens([draft[i]]) != 1:
            break
        consumed += 1
    constraint.matcher.rollback(consumed)
    return _unpack(bitmask, vocab_size)


def _full_bitmask(rows: int, vocab_size: int) -> torch.Tensor:
    return torch.full((rows, (vocab_size + 31) // 32), -1, dtype=torch.int32)


def _unpack(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Token t is bit t % 8 of byte t // 8 (little-endian int32 words): the bytes unpacked into [B, V] booleans."""
    bits = (bitmask.view(torch.uint8).unsqueeze(-1) >> _BIT) & 1
    return bits.view(bitmask.shape[0], -1)[:, :vocab_size].bool()
