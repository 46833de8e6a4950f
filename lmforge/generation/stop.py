"""Streaming text out of tokens: incremental detokenization and stop strings matched across token boundaries.

`IncrementalDetokenizer` decodes a short window of ids per new token (the prefix/read offsets of Hugging Face
text-generation-inference) and waits while a multi-byte character is incomplete. `StopStringMatcher` holds back
any tail that could still begin a stop string, so a stream never shows text that a stop string later removes.
"""

from collections.abc import Sequence

PROMPT_CONTEXT = 5  # prompt ids decoded with the output so that e.g. SentencePiece keeps the leading space


class IncrementalDetokenizer:
    """Feed token ids one at a time; get back the new, complete text each one adds."""

    def __init__(self, tokenizer, prompt: Sequence[int] = (), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids = list(prompt[-PROMPT_CONTEXT:])
        self.prefix_offset = 0  # ids[prefix_offset:read_offset] were decoded already and give context
        self.read_offset = len(self.ids)

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        if len(text) > len(before) and not text.endswith("\ufffd"):  # U+FFFD: a character still incomplete
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return text[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still pending (an incomplete character decodes to U+FFFD, as the full decode would)."""
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(before):]


class StopStringMatcher:
    """Feed text chunks; get back (text safe to show, stopped). After a stop, the stop text and everything
    after it are dropped."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(stops)
        self.pending = ""  # text received but not yet released (it may be the start of a stop string)
        self.stopped = False

    def push(self, text: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        # Released text never holds the start of a stop string, so searching the pending text is enough.
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[:min(hits)], "", True
            return out, True
        hold = self._longest_partial_match()
        out = self.pending[:len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out, False

    def _longest_partial_match(self) -> int:
        """Length of the longest tail of the pending text that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(stop[:k]):
                    best = k
                    break
        return best

    def flush(self) -> str:
        """The held-back text, released because no more text will come."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


class TextStream:
    """Detokenizer + stop-string matcher for one request: push ids, get (new text, stopped)."""

    def __init__(self, tokenizer, prompt: Sequence[int] = (), stops: Sequence[str] = ()):
        self.detokenizer = IncrementalDetokenizer(tokenizer, prompt)
        self.matcher = StopStringMatcher(stops)
        self.text = ""  # everything released so far

    def push(self, token: int) -> tuple[str, bool]:
        out, stopped = self.matcher.push(self.detokenizer.push(token))
        self.text += out
        return out, stopped

    def finish(self) -> str:
        """Release what is held back at the end of the request (no stop string can complete any more)."""
        out, stopped = self.matcher.push(self.detokenizer.flush())
        if not stopped:
            out += self.matcher.flush()
        self.text += out
        return out
