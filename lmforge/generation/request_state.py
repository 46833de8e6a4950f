"""One request's progress after each sampled token: its text so far, its grammar's state (constrained decoding),
and whether a stop token, a stop string, a completed grammar or its token limit ends it. Shared by
`generate_stream` and the serving engine, so both stop the same way.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from lmforge.generation.grammar import TokenConstraint
from lmforge.generation.sampling_params import SamplingParams
from lmforge.generation.stop import TextStream


@dataclass
class StepOutput:
    """One new token of one sequence."""

    token: int
    text: str = ""  # new text safe to show (only with a tokenizer; held back while it may start a stop string)
    logprob: float | None = None  # raw log-probability of `token` (when SamplingParams.logprobs is set)
    top_logprobs: list[tuple[int, float]] | None = None  # the N most likely (id, logprob) at this step
    finish_reason: str | None = None  # "stop" (stop token or string), "length", or None while running


class RequestState:
    def __init__(self, params: SamplingParams, prompt: Sequence[int], tokenizer=None, vocab_size: int | None = None):
        """`vocab_size`: the logits' width, needed with a grammar (the mask covers every logit)."""
        self.params = params
        self.constraint = None
        if params.grammar is not None:
            width = vocab_size if vocab_size is not None else getattr(tokenizer, "vocab_size", 0)
            self.constraint = TokenConstraint(params.grammar, tokenizer, width, params.stop_token_ids)
        self.stream = TextStream(tokenizer, prompt, params.stop) if tokenizer is not None else None
        self.stop_ids = frozenset(params.stop_token_ids)
        self.num_generated = 0
        self.finished = False

    def push(self, token: int, logprob: float | None = None,
             top: list[tuple[int, float]] | None = None) -> StepOutput:
        """Record a sampled token; the event says what text it releases and whether the request is over."""
        event = StepOutput(token)
        self.num_generated += 1
        stopped_by_token = token in self.stop_ids
        stopped_by_text = stopped_by_grammar = False
        if self.constraint is not None and not stopped_by_token:
            self.constraint.advance(token)  # raises for a token the mask did not allow (the request fails alone)
            stopped_by_grammar = self.constraint.done  # complete: nothing but a stop token could follow
        if self.stream is not None and not stopped_by_token:
            event.text, stopped_by_text = self.stream.push(token)
        if stopped_by_token or stopped_by_text or stopped_by_grammar:
            event.finish_reason = "stop"
        elif self.num_generated >= self.params.max_new_tokens:
            event.finish_reason = "length"
        if event.finish_reason is not None:
            self.finished = True
            if self.stream is not None:
                event.text += self.stream.finish()
        if self.params.logprobs is not None:
            event.logprob = logprob
            event.top_logprobs = (top or [])[:self.params.logprobs]
        return event
