"""Assistant-only loss masks for SFT: tokenize a conversation through the tokenizer's chat template and label only
the assistant turns' tokens, each up to and including its end-of-turn token (`<|im_end|>`), so the model learns
to answer and to stop, not to imitate the user. Turn boundaries come from rendering prefixes of the conversation
(template-agnostic: no string search inside the rendered text), checked to be token prefixes of the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.common.errors import LmforgeError
from lmforge.train.post.sft_config import TRUNCATIONS
from lmforge.train.step import IGNORE_INDEX


@dataclass(frozen=True)
class Tokenized:
    ids: list[int]
    labels: list[int]  # ids where supervised (assistant content + end of turn), IGNORE_INDEX elsewhere
    truncated: bool = False


def end_of_turn_id(tokenizer) -> int | None:
    """`<|im_end|>` when the tokenizer has it (ChatML), else its EOS token."""
    eot = tokenizer.token_to_id("<|im_end|>")
    return eot if eot is not None else tokenizer.eos_token_id


def _encode(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    # tokenize=True: special-token strings inside the data stay plain text (only the template writes control ids)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)


def tokenize_conversation(tokenizer, messages: list[dict], max_len: int | None = None,
                          truncation: str = "right") -> Tokenized | None:
    """(ids, labels) of a whole conversation, or None when `truncation="drop"` and it is longer than max_len.

    Truncation policy: "right" keeps the first max_len tokens (the system prompt and the earliest turns; an
    assistant turn cut in half keeps its first tokens supervised, without its end-of-turn token), "drop" skips the
    conversation. Either way a conversation left with no supervised token returns None.
    """
    if truncation not in TRUNCATIONS:
        raise LmforgeError(f"truncation={truncation!r}; allowed: {', '.join(TRUNCATIONS)}")
    ids = _encode(tokenizer, messages)
    labels = [IGNORE_INDEX] * len(ids)
    eot = end_of_turn_id(tokenizer)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if i == 0:
            raise LmforgeError("a conversation cannot open with an assistant turn (no prompt to answer)")
        start = _encode(tokenizer, messages[:i], generation_prompt=True)
        through = _encode(tokenizer, messages[: i + 1])
        if ids[: len(start)] != start or ids[: len(through)] != through:
            raise LmforgeError(f"the chat template does not render message {i}'s prefix as a prefix of the whole "
                               f"conversation, so assistant turns cannot be located; use a prefix-stable template")
        a, b = len(start), len(through)
        turn = ids[a:b]
        if eot in turn:  # stop after the turn's last end-of-turn token (ChatML's trailing "\n" is the template's)
            b = a + len(turn) - turn[::-1].index(eot)
        labels[a:b] = ids[a:b]
    truncated = max_len is not None and len(ids) > max_len
    if truncated:
        if truncation == "drop":
            return None
        ids, labels = ids[:max_len], labels[:max_len]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return Tokenized(ids, labels, truncated)


def prompt_and_reference(tokenizer, messages: list[dict]) -> tuple[list[int], str]:
    """For exact-match evaluation: the ids of everything before the LAST assistant turn plus the generation
    prompt, and that turn's content (the reference answer)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return _encode(tokenizer, messages[:last], generation_prompt=True), messages[last]["content"]
