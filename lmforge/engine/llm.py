"""The `LLM` facade over the serving engine: requests in, tokens out, with continuous batching and a paged cache.

`generate(prompts, ...)` runs a list of prompts to completion; the step-wise API (`add_request`, `step`, `abort`)
is what the HTTP server drives. Each step schedules sequences (scheduler), runs the model once over all their new
tokens (runner), samples one token for each sequence that reached its end, and retires finished sequences.
One request never ends another: `validate` refuses what could break a batch before admission, and a step that
raises anyway is recomputed one request at a time, so that only the requests that fail alone are ended (see `step`).
"""

import logging
from dataclasses import dataclass, field

import torch

from lmforge.common.errors import LmforgeError
from lmforge.common.threads import tick as tick_threads
from lmforge.engine.block_manager import BlockManager
from lmforge.engine.runner import ModelRunner, kv_bytes_per_token
from lmforge.engine.scheduler import ScheduledSeq, Scheduler
from lmforge.engine.sequence import Sequence, Status
from lmforge.engine.stats import EngineStats
from lmforge.generation.generate import fit_prompt
from lmforge.generation.grammar import token_masks
from lmforge.generation.request_state import RequestState
from lmforge.generation.sampling import NonFiniteLogitsError, Sampler, TokenHistory, check_finite
from lmforge.generation.sampling_params import SamplingParams

log = logging.getLogger("lmforge.engine")


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16
    num_blocks: int | None = None  # None: as many as kv_cache_gb holds
    kv_cache_gb: float = 1.0
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 2048
    enable_prefix_caching: bool = True
    chunked_prefill: bool = False

    def __post_init__(self):
        if self.block_size < 1 or (self.num_blocks is not None and self.num_blocks < 1):
            raise LmforgeError("EngineConfig.block_size and num_blocks must be >= 1")
        if self.kv_cache_gb <= 0 or self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise LmforgeError("EngineConfig.kv_cache_gb, max_num_seqs and max_num_batched_tokens must be positive")


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # the most likely (token id, logprob) at this step


@dataclass
class RequestOutput:
    request_id: int
    prompt_ids: list[int]
    new_token_ids: list[int] = field(default_factory=list)  # tokens produced by the last step
    output_ids: list[int] = field(default_factory=list)  # all tokens so far
    text_delta: str = ""  # new text safe to show (with a tokenizer; stop strings held back and cut)
    text: str = ""  # all text released so far
    logprobs: list[TokenLogprob] = field(default_factory=list)  # for new_token_ids, when asked for
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    error: str | None = None


class LLM:
    def __init__(self, model, tokenizer=None, config: EngineConfig | None = None, vision=None):
        """`vision`: a LLaVA model's ImageEncoder (generation/images.py), for requests with images."""
        cfg = model.config
        if getattr(model, "is_encoder_decoder", False):
            raise LmforgeError(f"the serving engine runs decoder-only models; this is an encoder-decoder "
                               f"({cfg.family}): use `lmforge generate` (lmforge.generation.seq2seq)")
        att = cfg.attention
        if not att.causal or att.sliding_window is not None:
            raise LmforgeError("the serving engine supports causal full-attention models (MHA/GQA/MQA/MLA); this "
                               f"model has causal={att.causal}, sliding_window={att.sliding_window} "
                               "(use lmforge.generation.generate instead)")
        self.model, self.tokenizer, self.vision = model, tokenizer, vision
        self.config = config = config or EngineConfig()
        num_blocks = config.num_blocks or max(1, int(config.kv_cache_gb * 2**30 / kv_bytes_per_token(model)
                                                     / config.block_size))
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, config.max_num_batched_tokens,
                                   config.chunked_prefill)
        self.runner = ModelRunner(model, num_blocks, config.block_size)
        self.device = model.embed.weight.device
        self.requests: dict[int, Sequence] = {}
        self.num_steps = 0  # steps that ran the model, and tokens handed to requests: for stats()
        self.num_generated = 0

    # -- step-wise API -----------------------------------------------------------------------------------------
    @property
    def max_request_tokens(self) -> int:
        """The most tokens (prompt + generated) one request can hold: the context, or the whole KV cache if smaller."""
        return min(self.model.config.max_seq_len, self.block_manager.num_blocks * self.block_manager.block_size)

    def validate(self, prompt_ids: list[int], params: SamplingParams, num_images: int = 0) -> None:
        """Raise LmforgeError for a request whose token ids (prompt, logit_bias, stop_token_ids) are outside the
        model's vocabulary: such a request would fail inside a batched step. `add_request` calls it. A model that
        takes images also refuses a prompt whose image tokens do not match its `num_images` images."""
        if num_images and self.vision is None:
            raise LmforgeError("this model takes no images (it is not a LLaVA model)")
        if self.vision is not None:
            self.vision.check(prompt_ids, num_images)
        vocab = self.model.config.vocab_size
        for what, ids in (("prompt token id", prompt_ids), ("logit_bias token id", params.logit_bias or ()),
                          ("stop_token_ids entry", params.stop_token_ids)):
            bad = next((t for t in ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab), None)
            if bad is not None:
                raise LmforgeError(f"{what} {bad!r} is outside the vocabulary [0, {vocab})")

    def add_request(self, prompt_ids: list[int], params: SamplingParams | None = None,
                    images: torch.Tensor | None = None) -> int:
        """Queue a request; its id is what `step` outputs and `abort` refer to. `images`: pixel_values
        [n, 3, H, W] of the prompt's n images, whose image tokens it holds expanded (ImageEncoder.expand)."""
        params = params or SamplingParams()
        fitted = fit_prompt(prompt_ids, params, self.model.config.max_seq_len)
        if images is not None and len(fitted) != len(prompt_ids):
            raise LmforgeError(f"the prompt holds images and is too long for the context ({len(prompt_ids)} tokens); "
                               "truncating it would cut an image")
        prompt_ids = fitted
        self.validate(prompt_ids, params, 0 if images is None else images.shape[0])
        seq = Sequence(list(prompt_ids), params=params, max_new_tokens=params.max_new_tokens)
        if images is not None:
            seq.images = self.vision.encode(seq.prompt_ids, images)  # the tower runs once, at admission
        seq.state = RequestState(params, seq.prompt_ids, self.tokenizer, self.model.config.vocab_size)
        seq.generator = torch.Generator(device=self.device).manual_seed(params.seed) if params.seed is not None \
            else None
        self.requests[seq.seq_id] = seq
        self.scheduler.add(seq)
        return seq.seq_id

    def abort(self, request_id: int) -> None:
        seq = self.requests.pop(request_id, None)
        if seq is not None:
            self.scheduler.finish(seq, "abort")

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    def stats(self) -> EngineStats:
        """The engine's figures now (queues, KV blocks, totals since start): what /metrics and the web page show."""
        blocks = self.block_manager
        return EngineStats(
            requests_waiting=len(self.scheduler.waiting), requests_running=len(self.scheduler.running),
            kv_blocks_total=blocks.num_blocks, kv_blocks_free=blocks.num_free, kv_blocks_cached=len(blocks.free_cached),
            kv_block_size=blocks.block_size, max_request_tokens=self.max_request_tokens,
            preemptions_total=self.scheduler.num_preemptions, steps_total=self.num_steps,
            computed_tokens_total=self.runner.num_computed_tokens, generated_tokens_total=self.num_generated)

    def step(self) -> list[RequestOutput]:
        """Run one model step; outputs of the requests that produced a token or finished in it.

        Fault isolation: if computing the batch (model, sampler) raises, whatever the exception, the step is computed
        again one request at a time (the same tokens: a request's KV writes are idempotent, seeded generators are
        rewound), and only the requests that still fail alone end with finish_reason "error". Their blocks are not
        registered in the prefix cache. A failure while recording one request's token (text, stop strings) ends that
        request alone too. The batch is retried only on the failure path, so a normal step costs nothing more.
        """
        tick_threads()  # fewer OpenMP threads while other processes use the CPU
        batch, failed = self.scheduler.schedule()
        outputs = [self._output(seq, error=f"the request needs more KV cache blocks than exist "
                                             f"({self.block_manager.num_blocks})") for seq in failed]
        if not batch:
            return outputs
        copies, self.block_manager.pending_copies = self.block_manager.pending_copies, []
        rng_states = {item.seq: item.seq.generator.get_state() for item in batch if item.seq.generator is not None}
        self.num_steps += 1
        try:
            sampled, errors = self._compute(batch, copies)
        except Exception:  # noqa: BLE001 - isolated below: only the requests that fail alone end
            log.warning("an engine step over %d requests failed; computing each alone", len(batch), exc_info=True)
            for seq, state in rng_states.items():
                seq.generator.set_state(state)
            sampled, errors = self._compute_alone(batch, copies)
        done = [item for item in batch if item.seq not in errors]
        sampling = [item.seq for item in done if item.samples]  # before postprocess appends the new tokens
        self.scheduler.postprocess(done, {seq.seq_id: token for seq, (token, _, _) in sampled.items()})
        for seq, message in errors.items():
            self.scheduler.finish(seq, "error")
            outputs.append(self._output(seq, error=message))
        for seq in sampling:
            try:
                token, logprob, top = sampled[seq]
                event = seq.state.push(token, logprob, top)
            except Exception as err:  # noqa: BLE001 - this request's bookkeeping failed: it ends alone
                log.warning("request %d failed after sampling", seq.seq_id, exc_info=True)
                self.scheduler.finish(seq, "error")
                outputs.append(self._output(seq, error=_describe(err)))
                continue
            self.num_generated += 1
            if event.finish_reason is not None:
                self.scheduler.finish(seq, event.finish_reason)
            lps = [TokenLogprob(token, event.logprob, event.top_logprobs)] if event.logprob is not None else []
            outputs.append(self._output(seq, [token], event.text, lps))
        return outputs

    def _compute(self, batch: list[ScheduledSeq], copies: list[tuple[int, int]]):
        """Run the model over the batch and sample: ({seq: (token, logprob, top)}, {seq: error message})."""
        logits = self.runner.run(batch, copies)
        return self._sample([item.seq for item in batch if item.samples], logits)

    def _compute_alone(self, batch: list[ScheduledSeq], copies: list[tuple[int, int]]):
        """`_compute` one request at a time; a request that raises alone gets the error."""
        self.runner.cache.copy_blocks(copies)  # copy-on-write copies are idempotent: applying them again is safe
        sampled, errors = {}, {}
        for item in batch:
            try:
                one_sampled, one_errors = self._compute([item], [])
            except Exception as err:  # noqa: BLE001 - the request at fault
                log.warning("request %d failed alone in an engine step", item.seq.seq_id, exc_info=True)
                errors[item.seq] = _describe(err)
                continue
            sampled.update(one_sampled)
            errors.update(one_errors)
        return sampled, errors

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor):
        """{seq: (token, logprob, top)} for the rows that sampled, {seq: error} for rows with broken logits."""
        errors: dict[Sequence, str] = {}
        try:
            check_finite(logits)
        except NonFiniteLogitsError as err:
            keep = [row for row in range(len(seqs)) if row not in err.rows]
            errors = {seqs[row]: "the model produced NaN or infinite logits for this request" for row in err.rows}
            seqs, logits = [seqs[row] for row in keep], logits[keep]
        if not seqs:
            return {}, errors
        sampler = Sampler([s.params for s in seqs], logits.shape[-1], self.device)
        history = None
        if sampler.needs_history:
            history = TokenHistory.from_tokens([s.prompt_ids for s in seqs], logits.shape[-1], self.device,
                                               generated=[s.output_ids for s in seqs])
        allowed = token_masks([s.state.constraint for s in seqs], logits.shape[-1], self.device)  # grammars
        out = sampler(logits, history, [s.generator for s in seqs], allowed)
        tokens = out.tokens.tolist()
        logprobs = out.logprobs.tolist() if out.logprobs is not None else [None] * len(seqs)
        tops = ([list(zip(i, v, strict=True)) for i, v in zip(out.top_ids.tolist(), out.top_logprobs.tolist(),
                                                               strict=True)]
                if out.top_ids is not None else [None] * len(seqs))
        return {s: (t, lp, top) for s, t, lp, top in zip(seqs, tokens, logprobs, tops, strict=True)}, errors

    def _output(self, seq: Sequence, new: list[int] = (), text: str = "", logprobs=(),
                error: str | None = None) -> RequestOutput:
        if seq.status is Status.FINISHED:
            self.requests.pop(seq.seq_id, None)
        stream = seq.state.stream if seq.state is not None else None
        return RequestOutput(seq.seq_id, seq.prompt_ids, list(new), list(seq.output_ids), text,
                             stream.text if stream is not None else "", list(logprobs), seq.is_finished,
                             seq.finish_reason, error)

    # -- offline API -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams] | None = None,
                 images: list[torch.Tensor | None] | None = None) -> list[RequestOutput]:
        """Run every prompt to completion; final outputs in prompt order (text with a tokenizer). `images`: per
        prompt, its pixel_values or None (see add_request)."""
        params = params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        images = images if images is not None else [None] * len(prompts)
        if len(params) != len(prompts) or len(images) != len(prompts):
            raise LmforgeError(f"got {len(params)} SamplingParams and {len(images)} image lists for "
                               f"{len(prompts)} prompts")
        ids = [self.add_request(p, sp, im) for p, sp, im in zip(prompts, params, images, strict=True)]
        done: dict[int, RequestOutput] = {}
        while self.has_unfinished():
            for out in self.step():
                if out.finished:
                    done[out.request_id] = out
        return [done[i] for i in ids]


def _describe(err: Exception) -> str:
    return f"the engine failed on this request: {type(err).__name__}: {err}"
