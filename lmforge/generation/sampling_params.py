"""`SamplingParams`: everything one request says about how its tokens are chosen, validated up front.

Names and ranges follow the OpenAI / vLLM request fields (temperature, top_p, presence/frequency_penalty,
logit_bias, stop, logprobs, seed) plus Hugging Face's top_k, min_p and repetition_penalty.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lmforge.common.errors import ConfigError

MAX_LOGPROBS = 20  # OpenAI's limit on top_logprobs


def _number(name: str, value, low: float, high: float, *, low_open: bool = False, what: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be in {bracket}{low}, {high}]{what}, got {value!r}")
    return float(value)


def _integer(name: str, value, low: int, high: int | None = None, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be an integer {allowed}{what}, got {value!r}")
    return value


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the tokens of one request. The defaults give plain greedy decoding.

    Order of application on the logits: repetition_penalty, presence/frequency_penalty, logit_bias,
    temperature, top_k, top_p, min_p (Hugging Face's warper order), then sample (argmax at temperature 0).
    """

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off; the token whose cumulative probability crosses top_p is kept
    min_p: float = 0.0  # 0 = off; drop tokens with probability < min_p * max probability
    repetition_penalty: float = 1.0  # 1 = off; CTRL / transformers: over prompt + generated tokens
    presence_penalty: float = 0.0  # OpenAI: minus this once for every token already generated
    frequency_penalty: float = 0.0  # OpenAI: minus this times how often the token was generated
    logit_bias: Mapping[int, float] | None = None  # token id -> added to its logit (OpenAI: -100..100)
    seed: int | None = None  # a per-request torch.Generator: same seed, same tokens, whatever the batch
    stop_token_ids: Sequence[int] = ()  # the request ends after one of these (the token is returned)
    stop: Sequence[str] = ()  # the request ends when its text contains one; the stop text is not returned
    logprobs: int | None = None  # return the chosen token's logprob and this many top alternatives (0..20)
    truncate: bool = False  # a prompt too long for the context keeps its last tokens instead of failing
    grammar: str | None = None  # constrained decoding: an llguidance grammar (generation/grammar.py builds them)

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise through object.__setattr__
        _integer("max_new_tokens", self.max_new_tokens, 1)
        set_(self, "temperature", _number("temperature", self.temperature, 0.0, 100.0, what=" (0 = greedy)"))
        _integer("top_k", self.top_k, 0, what=" (0 = off)")
        set_(self, "top_p", _number("top_p", self.top_p, 0.0, 1.0, low_open=True, what=" (1 = off)"))
        set_(self, "min_p", _number("min_p", self.min_p, 0.0, 1.0, what=" (0 = off)"))
        set_(self, "repetition_penalty", _number("repetition_penalty", self.repetition_penalty, 0.0, 100.0,
                                                 low_open=True, what=" (1 = off)"))
        set_(self, "presence_penalty", _number("presence_penalty", self.presence_penalty, -2.0, 2.0))
        set_(self, "frequency_penalty", _number("frequency_penalty", self.frequency_penalty, -2.0, 2.0))
        set_(self, "logit_bias", _logit_bias(self.logit_bias))
        if self.seed is not None:
            _integer("seed", self.seed, 0, 2**63 - 1)
        ids = [self.stop_token_ids] if isinstance(self.stop_token_ids, int) else self.stop_token_ids
        if isinstance(ids, str | bytes) or not isinstance(ids, Sequence | set | frozenset):
            raise ConfigError(f"stop_token_ids must be a list of token ids, got {self.stop_token_ids!r}")
        set_(self, "stop_token_ids", tuple(sorted({_integer("stop_token_ids[]", i, 0) for i in ids})))
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        if not isinstance(stop, Sequence) or not all(isinstance(s, str) and s for s in stop):
            raise ConfigError(f"stop must be a non-empty string or a list of them, got {self.stop!r}")
        set_(self, "stop", tuple(dict.fromkeys(stop)))
        if self.logprobs is not None:
            _integer("logprobs", self.logprobs, 0, MAX_LOGPROBS)
        if not isinstance(self.truncate, bool):
            raise ConfigError(f"truncate must be true or false, got {self.truncate!r}")
        if self.grammar is not None and (not isinstance(self.grammar, str) or not self.grammar):
            raise ConfigError(f"grammar must be a non-empty string (generation/grammar.py), got {self.grammar!r:.80}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def uses_history(self) -> bool:
        """Whether the penalties need the tokens seen so far."""
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    def __hash__(self):  # logit_bias is a dict; hash what identifies the sampling behaviour
        return hash((self.temperature, self.top_k, self.top_p, self.min_p, self.seed, self.max_new_tokens))


def _logit_bias(bias) -> dict[int, float] | None:
    if bias is None or bias == {}:
        return None
    if not isinstance(bias, Mapping):
        raise ConfigError(f"logit_bias must be a mapping of token id -> bias, got {type(bias).__name__}")
    out = {}
    for key, value in bias.items():
        try:  # JSON objects have string keys: accept "50256" as 50256
            token = int(key) if isinstance(key, str) else key
        except ValueError:
            raise ConfigError(f"logit_bias keys must be token ids, got {key!r}") from None
        _integer("logit_bias key", token, 0)
        out[token] = _number(f"logit_bias[{token}]", value, -100.0, 100.0)
    return out
