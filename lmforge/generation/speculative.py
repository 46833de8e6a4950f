"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a cheap draft proposes k tokens, the target
checks them all in one cached forward pass, and the accept/reject rule keeps the target's distribution exactly.

Drafts: a smaller model with the same vocabulary (`ModelDraft`), the target's own MTP head (`MTPDraft`,
mtp_draft.py) or prompt lookup (`NgramDraft`: the continuation of the last earlier occurrence of the context's final
n-gram, a one-hot q). Batch size 1; rejected positions are rolled back in both KV caches with `truncate`.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lmforge.common.errors import LmforgeError
from lmforge.generation.cache import new_kv_cache
from lmforge.generation.generate import fit_prompt
from lmforge.generation.grammar import TokenConstraint, draft_masks
from lmforge.generation.mtp_draft import MTPDraft
from lmforge.generation.sampling import Sampler, check_finite
from lmforge.generation.sampling_params import SamplingParams
from lmforge.generation.step import model_step, prefill
from lmforge.model.mtp import MultiTokenPrediction


def accept_reject(p: torch.Tensor, q: torch.Tensor, draft: torch.Tensor, greedy: bool,
                  generator: torch.Generator | None = None) -> tuple[int, int]:
    """(number of draft tokens accepted n, the token that follows them).

    p [k+1, V]: target distributions at the k draft positions and one more; q [k, V]: the draft's; draft [k].
    Sampling: accept x_i with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection draw from
    norm(max(0, p_i - q_i)); if all k pass draw a bonus token from p_k. Greedy: accept while x_i == argmax p_i.
    """
    k = draft.shape[0]
    if greedy:
        target = p.argmax(dim=-1)  # [k+1]
        ok = target[:k] == draft
        n = int(ok.long().cumprod(0).sum()) if k else 0
        return n, int(target[n])
    rows = torch.arange(k, device=p.device)
    px, qx = p[rows, draft], q[rows, draft]
    u = torch.rand(k, generator=generator, device=p.device)
    ok = u * qx < px  # u < p/q without dividing by a zero q
    n = int(ok.long().cumprod(0).sum()) if k else 0
    if n < k:
        residual = (p[n] - q[n]).clamp(min=0)
        if float(residual.sum()) <= 0:  # p == q up to rounding: the rejection had probability ~0
            residual = p[n]
        token = torch.multinomial(residual / residual.sum(), 1, generator=generator)
    else:
        token = torch.multinomial(p[k], 1, generator=generator)
    return n, int(token)


class Distributions:
    """Target/draft logits -> the probabilities the sampler would draw from (the same transforms as Sampler)."""

    def __init__(self, params: SamplingParams, vocab_size: int, device):
        if params.uses_history:
            raise LmforgeError("speculative decoding supports temperature, top-k, top-p and min-p; not repetition, "
                               "presence or frequency penalties")
        self.sampler = Sampler([params], vocab_size, device)
        self.greedy = params.greedy

    def __call__(self, logits: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """[N, V] logits -> [N, V] probabilities (greedy: the processed logits, only their argmax matters);
        `allowed` [N, V]: a grammar's masks (grammar.draft_masks)."""
        check_finite(logits)
        processed = self.sampler.process(logits, allowed=allowed)
        return processed if self.greedy else processed.softmax(dim=-1)


class ModelDraft:
    """A smaller model of the same vocabulary drafting autoregressively with its own KV cache."""

    def __init__(self, model, max_len: int):
        self.model = model
        self.cache = new_kv_cache(model, 1, max_len=max_len)
        self.device = next(model.parameters()).device

    def propose(self, tokens: list[int], k: int, dist: Distributions,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(draft tokens [k], their distributions q [k, V]); feeds what the cache has not seen yet first."""
        new = torch.tensor([tokens[self.cache.length:]], device=self.device)
        drafted, qs = [], []
        for _ in range(k):
            logits = model_step(self.model, new, self.cache)
            q = dist(logits)
            token = q.argmax(-1) if dist.greedy else torch.multinomial(q, 1, generator=generator)[:, 0]
            drafted.append(token)
            qs.append(q[0])
            new = token[:, None]
        return torch.cat(drafted), torch.stack(qs)

    def rollback(self, n_valid: int) -> None:
        self.cache.truncate(min(self.cache.length, n_valid))


class NgramDraft:
    """Prompt lookup (Saxena 2023): find the last earlier occurrence of the context's final n-gram (longest n
    first) and propose the k tokens that followed it, with probability one."""

    def __init__(self, max_ngram: int = 3, vocab_size: int = 0):
        if max_ngram < 1:
            raise LmforgeError(f"max_ngram must be >= 1, got {max_ngram}")
        self.max_ngram = max_ngram
        self.vocab_size = vocab_size

    def lookup(self, tokens: Sequence[int], k: int) -> list[int]:
        t = torch.as_tensor(list(tokens), dtype=torch.long)
        L = t.shape[0]
        for n in range(min(self.max_ngram, L - 1), 0, -1):
            windows = t[:L - 1].unfold(0, n, 1)  # n-grams that have at least one token after them
            hits = (windows == t[L - n:]).all(dim=1).nonzero()
            if hits.numel():
                start = int(hits[-1]) + n
                return t[start:start + k].tolist()
        return []

    def propose(self, tokens: list[int], k: int, dist: Distributions,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        draft = torch.tensor(self.lookup(tokens, k), dtype=torch.long)
        q = torch.nn.functional.one_hot(draft, self.vocab_size).float()
        return draft, q

    def rollback(self, n_valid: int) -> None:
        pass


@dataclass
class SpeculativeResult:
    tokens: list[int] = field(default_factory=list)  # generated ids (stop token included when produced)
    proposed: int = 0  # draft tokens offered to the target
    accepted: int = 0  # draft tokens the target kept
    target_forwards: int = 0  # verification passes (the prompt's prefill not counted)
    finish_reason: str = "length"

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def tokens_per_forward(self) -> float:
        return len(self.tokens) / self.target_forwards if self.target_forwards else 0.0

    def summary(self) -> dict:
        return {"proposed": self.proposed, "accepted": self.accepted,
                "acceptance_rate": round(self.acceptance_rate, 4), "target_forwards": self.target_forwards,
                "tokens_per_forward": round(self.tokens_per_forward, 3)}


def make_draft(target, draft: str | object, max_len: int, max_ngram: int = 3):
    """"ngram" -> NgramDraft; the target's MultiTokenPrediction (LM.mtp) -> MTPDraft; a Transformer (same
    vocabulary as the target) -> ModelDraft."""
    vocab = target.config.vocab_size
    if draft == "ngram":
        return NgramDraft(max_ngram, vocab)
    if isinstance(draft, MultiTokenPrediction):
        return MTPDraft(target, draft, max_len)
    if not hasattr(draft, "config"):
        raise LmforgeError(f"draft must be 'ngram', MTP modules (LM.mtp) or a model, got {draft!r}")
    if draft.config.vocab_size != vocab:
        raise LmforgeError(f"the draft model's vocabulary ({draft.config.vocab_size}) differs from the target's "
                           f"({vocab}); speculative decoding needs the same tokenizer")
    return ModelDraft(draft, max_len)


@torch.inference_mode()
def speculative_generate(target, prompt: Sequence[int], draft, params: SamplingParams | None = None,
                         num_draft: int = 4, max_ngram: int = 3, tokenizer=None) -> SpeculativeResult:
    """Generate for one prompt: each round the draft proposes up to `num_draft` tokens, one target forward over
    [last token, drafts] verifies them, and 1 + accepted tokens are emitted. With `params.grammar` (and the
    `tokenizer` it needs) the target's distribution at every draft position is masked by the grammar's state there,
    so the output follows the grammar exactly as without a draft."""
    params = params or SamplingParams()
    if num_draft < 1:
        raise LmforgeError(f"num_draft must be >= 1, got {num_draft}")
    prompt = fit_prompt(prompt, params, target.config.max_seq_len)
    device = next(target.parameters()).device
    max_len = len(prompt) + params.max_new_tokens + num_draft + 1
    drafter = make_draft(target, draft, max_len, max_ngram)
    dist = Distributions(params, target.config.vocab_size, device)
    vocab = target.config.vocab_size
    constraint = (TokenConstraint(params.grammar, tokenizer, vocab, params.stop_token_ids)
                  if params.grammar is not None else None)
    generator = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
    cache = new_kv_cache(target, 1, max_len=max_len)
    forward = getattr(drafter, "target_forward", target)  # an MTP draft keeps the target's hidden states
    if len(prompt) > 1:  # the last prompt token is fed with the first drafts
        prefill(forward, torch.tensor([prompt[:-1]], device=device), cache)
    tokens, result = list(prompt), SpeculativeResult()
    stops = set(params.stop_token_ids)
    while True:
        room = params.max_new_tokens - len(result.tokens)
        k = min(num_draft, room - 1)
        drafted, q = drafter.propose(tokens, k, dist, generator) if k > 0 else (torch.empty(0, dtype=torch.long),
                                                                                 None)
        drafted = drafted.to(device)
        k = drafted.shape[0]
        fed = torch.cat([torch.tensor(tokens[cache.length:], device=device), drafted])[None]
        T = fed.shape[1]
        logits = model_step(forward, fed, cache, logits_at=torch.arange(T - k - 1, T, device=device))[0]
        result.target_forwards += 1
        allowed = draft_masks(constraint, drafted.tolist(), vocab).to(device) if constraint is not None else None
        p = dist(logits, allowed)
        n, nxt = accept_reject(p, q.to(device) if k else p[:0], drafted, dist.greedy, generator)
        result.proposed += k
        result.accepted += n
        emitted = drafted[:n].tolist() + [nxt]
        cache.truncate(len(tokens) + n)  # keep the context and the accepted drafts; `nxt` is fed next round
        drafter.rollback(len(tokens) + n)
        for token in emitted:
            result.tokens.append(token)
            tokens.append(token)
            if constraint is not None and token not in stops:
                constraint.advance(token)
            if token in stops or (constraint is not None and constraint.done):
                result.finish_reason = "stop"
                return result
            if len(result.tokens) >= params.max_new_tokens:
                return result
