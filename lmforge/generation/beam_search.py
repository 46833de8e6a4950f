"""Beam search (deterministic), with transformers' length_penalty and early_stopping semantics.

All beams of a prompt decode as one batch sharing a KV cache that is reordered by parent beam after every step.
Each step keeps the best 2 x num_beams continuations (so that num_beams stay alive when some end), moves the ones
that end among the top num_beams to the finished set, scored sum(logprob) / length ** length_penalty.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.generation.cache import new_kv_cache
from lmforge.generation.generate import fit_prompt
from lmforge.generation.sampling import check_finite
from lmforge.generation.sampling_params import SamplingParams
from lmforge.generation.step import decode_step, prefill

NEG = -1.0e9  # "impossible" score, as transformers uses (not -inf: sums and divisions stay finite)


@dataclass(frozen=True)
class BeamSearchParams:
    num_beams: int = 4
    max_new_tokens: int = 128
    length_penalty: float = 1.0  # > 0 favours longer answers, < 0 shorter ones (exponent on the length)
    early_stopping: bool | str = False  # True: stop when num_beams are done; False: heuristic; "never": exact
    stop_token_ids: Sequence[int] = ()
    num_return_sequences: int = 1
    truncate: bool = False

    def __post_init__(self):
        if isinstance(self.num_beams, bool) or not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise ConfigError(f"num_beams must be an integer >= 1, got {self.num_beams!r}")
        SamplingParams(max_new_tokens=self.max_new_tokens, stop_token_ids=self.stop_token_ids, truncate=self.truncate)
        object.__setattr__(self, "stop_token_ids", tuple(sorted(set(self.stop_token_ids))))
        if isinstance(self.length_penalty, bool) or not isinstance(self.length_penalty, int | float):
            raise ConfigError(f"length_penalty must be a number, got {self.length_penalty!r}")
        if self.early_stopping not in (True, False, "never"):
            raise ConfigError(f"early_stopping must be true, false or 'never', got {self.early_stopping!r}")
        n = self.num_return_sequences
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.num_beams:
            raise ConfigError(f"num_return_sequences must be an integer in [1, num_beams={self.num_beams}], got {n!r}")


@dataclass
class Beam:
    tokens: list[int]  # generated ids (the stop token included when the beam ended with one)
    score: float  # sum of log-probabilities / len(tokens) ** length_penalty
    finish_reason: str  # "stop" or "length"


@torch.inference_mode()
def beam_search(model, prompt: Sequence[int], params: BeamSearchParams | None = None) -> list[Beam]:
    """The num_return_sequences best beams for one prompt, best first."""
    p = params or BeamSearchParams()
    prompt = fit_prompt(prompt, SamplingParams(max_new_tokens=p.max_new_tokens, truncate=p.truncate),
                        model.config.max_seq_len)
    if not prompt:
        raise LmforgeError("the prompt must contain at least one token")
    device = next(model.parameters()).device
    n, max_new = p.num_beams, p.max_new_tokens
    keep = max(2, 1 + len(p.stop_token_ids)) * n  # candidates gathered per step
    top_n = torch.arange(keep, device=device) < n
    stops = torch.tensor(p.stop_token_ids, dtype=torch.long, device=device)

    cache = new_kv_cache(model, 1, max_len=len(prompt) + max_new)
    logits = prefill(model, torch.tensor([prompt], device=device), cache)
    cache.reorder(torch.zeros(n, dtype=torch.long, device=device))  # every beam starts from the prompt
    logits = logits.expand(n, -1)

    running = torch.zeros((n, max_new), dtype=torch.long, device=device)
    running_scores = torch.full((n,), NEG, device=device)
    running_scores[0] = 0.0  # only beam 0 is real at first, so the first step does not pick n copies
    finished = torch.zeros((n, max_new), dtype=torch.long, device=device)
    finished_scores = torch.full((n,), NEG, device=device)
    finished_lens = torch.zeros(n, dtype=torch.long, device=device)
    is_finished = torch.zeros(n, dtype=torch.bool, device=device)
    improvable = True  # can a running beam still beat the worst finished one?
    for step in range(max_new):
        check_finite(logits)
        vocab = logits.shape[-1]
        scores = torch.log_softmax(logits.float(), dim=-1) + running_scores[:, None]
        top_scores, top_index = torch.topk(scores.reshape(-1), keep)
        parent, token = top_index // vocab, top_index % vocab
        candidates = running[parent]
        candidates[:, step] = token
        ends = torch.isin(token, stops) | (step + 1 >= max_new)

        # The best num_beams candidates that did not end keep running.
        alive_scores = top_scores + ends.float() * NEG
        nxt = torch.topk(alive_scores, n).indices
        running, running_scores, parents = candidates[nxt], alive_scores[nxt], parent[nxt]

        # Candidates that ended among the top num_beams compete with the finished set.
        done_scores = top_scores / ((step + 1) ** p.length_penalty)
        if bool(is_finished.all()) and p.early_stopping is True:
            done_scores = done_scores + NEG
        if not improvable:
            done_scores = done_scores + NEG
        done_scores = done_scores + (~(ends & top_n)).float() * NEG
        merged = torch.topk(torch.cat([finished_scores, done_scores]), n).indices
        finished = torch.cat([finished, candidates])[merged]
        finished_scores = torch.cat([finished_scores, done_scores])[merged]
        finished_lens = torch.cat([finished_lens, torch.full((keep,), step + 1, device=device)])[merged]
        is_finished = torch.cat([is_finished, ends & top_n])[merged]

        cache.reorder(parents)
        # transformers' heuristic: the best a running beam could still score ("never" with a positive penalty
        # assumes it grows to max_new_tokens; otherwise it is scored at the current length)
        best_len = max_new if p.early_stopping == "never" and p.length_penalty > 0 else step + 1
        best_possible = running_scores[0] / (best_len ** p.length_penalty)
        worst_finished = finished_scores.min() if bool(is_finished.all()) else torch.tensor(NEG, device=device)
        improvable = improvable and bool(best_possible > worst_finished)
        if not improvable or (bool(is_finished.all()) and p.early_stopping is True) or bool(ends.all()):
            break
        logits = decode_step(model, running[:, step], cache)

    out = []
    for row in range(p.num_return_sequences):
        tokens = finished[row, :int(finished_lens[row])].tolist()
        reason = "stop" if tokens and tokens[-1] in p.stop_token_ids else "length"
        out.append(Beam(tokens, float(finished_scores[row]), reason))
    return out
