"""The one training loop (nanoGPT / torchtitan shape): warmup + decay LR, gradient accumulation normalised by
the global count of loss units, clipping, mixed precision, non-finite step skipping, periodic validation, samples
and atomic checkpoints with an exact resume, and a clean stop on SIGINT/SIGTERM. What it optimises is a plug-in
(objectives.py): next-token prediction (pretrain, SFT, distillation), a whole objective (reward model, DPO) or a
rollout objective (PPO, GRPO, rejection sampling: a step samples, then makes one or more updates).

Parallelism is applied from outside: hand the Trainer rank-split loaders and a `Parallel` plan (distributed.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from lmforge.common.allocator import keep_freed_memory
from lmforge.common.errors import LmforgeError
from lmforge.common.hardware import cpu_has_native_bf16, slow_bf16_note
from lmforge.common.threads import tick as tick_threads
from lmforge.generation.generate import greedy_completion
from lmforge.train.activation_checkpoint import apply_activation_checkpointing
from lmforge.train.config import TrainConfig
from lmforge.train.distributed import Parallel
from lmforge.train.master_weights import MasterWeights
from lmforge.train.metrics import MetricsLogger, flops_per_token, measure_peak_flops, memory_bytes, read_metrics
from lmforge.train.objectives import Objective
from lmforge.train.optim import build_optimizer
from lmforge.train.parallel.model_states import ModelStateMeter, gradient_bytes, model_state_record
from lmforge.train.precision import DTYPES, grad_scaler, resolve_device, resolve_precision, uses_master_weights
from lmforge.train.progress import TrainProgress
from lmforge.train.schedule import lr_at
from lmforge.train.signals import StopRequest
from lmforge.train.step import (
    ExtraLosses,
    StepResult,
    TokenLossFn,
    accumulate_gradients,
    count_targets,
    merge_results,
    optimizer_step,
    token_loss_sum,
)
from lmforge.train.trainer_checkpoints import TrainerCheckpoints


class Trainer(TrainerCheckpoints):
    """Trains `model` (any module mapping ids [B, T] to logits [B, T, V]) on loaders that yield numpy
    (inputs, targets) and expose state_dict / load_state_dict (lmforge.data.loader.PackedLoader); with a whole
    objective (Objective.batch_loss) the loader yields that objective's batches (pair indices) instead; a rollout
    objective (Objective.rollout) makes its own batches and takes train_loader=None."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, train_loader, val_loader=None, *,
                 run_dir: str | Path | None = None, tokenizer=None, extra_losses: ExtraLosses | None = None,
                 token_count_reduce: Callable[[int], int] = lambda n: n, log: Callable[[str], None] = print,
                 is_main: bool = True, loss_fn: TokenLossFn | None = None,
                 parallel: Parallel | None = None, objective: Objective | None = None, label: str = "pretrain") -> None:
        self.cfg, self.log, self.label = cfg, log, label  # label: the command's name on the progress bar / lines
        self.objective = objective or Objective()  # MoE balance / MTP losses, router-bias updates, MLM masking
        self.parallel = parallel or Parallel("none", resolve_device(cfg.device))
        self.is_main = is_main and self.parallel.is_main
        self.device = self.parallel.device
        self.precision = resolve_precision(cfg.precision, self.device)
        if self.precision == "fp16" and self.device.type == "cpu" and self.is_main:
            log("warning: precision fp16 on the CPU: autocast and loss scaling run, emulated and slow (a check of "
                "the GPU path); bf16 or fp32 train faster here")
        if self.precision == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16() and self.is_main:
            log(f"warning: precision bf16: {slow_bf16_note()}; precision fp32 (or auto) is faster here")
        if self.objective.rollout is None and len(train_loader) == 0:
            raise LmforgeError("the training data holds less than one batch; lower batch_size or add data")
        if cfg.activation_checkpointing:
            apply_activation_checkpointing(model)
        # DDP wraps; FSDP2 / tensor parallelism shard in place (before the optimizer); pp: this rank's stage
        self.model, wrapped = self.parallel.wrap(model, micro_batches=cfg.batch.grad_accum,
                                                 seq_len=getattr(train_loader, "seq_len", None))
        self.forward_model = torch.compile(wrapped) if cfg.compile else wrapped
        # bf16 in one process: bf16 weights stepped through fp32 masters (master_weights.py); autocast then casts
        # nothing the model holds (a distillation teacher's fp32 weights still). An objective with its own param
        # groups (PPO's actor and critic) keeps autocast over its weights.
        self.masters = (MasterWeights(self.model) if self.objective.param_groups is None and uses_master_weights(
            self.precision, self.parallel.distributed, self.model) else None)
        self.optimizer = (build_optimizer(self.model, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                          betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps,
                                          masters=self.masters)
                          if self.objective.param_groups is None else
                          torch.optim.AdamW(self.objective.param_groups(self.model), lr=cfg.optim.lr,
                                            betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps))
        self.optimizer = self.parallel.shard_optimizer(self.optimizer)  # ZeRO-1: states sharded over the ranks
        # the bytes of parameters, gradients and optimizer states a rank holds, recorded at the first update
        self.meter = ModelStateMeter(self.model) if self.parallel.distributed else None
        self.scaler = grad_scaler(self.precision, self.device,
                                  "layered" if self.parallel.layout is not None else self.parallel.mode)
        self.train_loader, self.val_loader, self.tokenizer = train_loader, val_loader, tokenizer
        self.extra_losses = extra_losses or self.objective.extra_losses
        self.token_count_reduce = token_count_reduce
        self.loss_fn = loss_fn  # the training loss (sum over tokens); None: cross-entropy. Validation stays CE.
        if self.parallel.distributed:
            self.token_count_reduce = lambda n: int(self.parallel.sum(token_count_reduce(n)))
        self.run_dir = Path(run_dir or cfg.out)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.step = self.tokens_seen = self.nonfinite_in_row = self.nonfinite_total = self.overflow_total = 0
        self.elapsed = 0.0
        self.last_val: float | None = None
        self.last_checkpoint: Path | None = None  # the newest checkpoint this run wrote (every rank knows it)
        self.flops_per_token = (flops_per_token(model.config, train_loader.seq_len)
                                if hasattr(model, "config") and self.objective.batch_loss is None else None)
        self.metrics = MetricsLogger(self.run_dir, cfg.logging.tensorboard, log) if is_main else None

    # ---- precision and data ----

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])

    def _batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        while self.objective.rollout is None:
            for batch in self.train_loader:  # (x, y), or (x, y, segment_ids) for packed documents (SFT)
                yield tuple(torch.from_numpy(a).to(self.device) for a in batch)

    def _prepare(self, batch: tuple[torch.Tensor, ...], index: int) -> tuple[torch.Tensor, ...]:
        """The objective's view of a batch (MLM: masked inputs and labels), seeded by the batch's index."""
        if self.objective.corrupt is None:
            return batch
        x, y, *rest = batch
        return (*self.objective.corrupt(x, y, index), *rest)

    # ---- evaluation ----

    def _eval_figures(self) -> dict[str, float] | None:
        """The objective's held-out figures, or the token loss (and perplexity) on the validation loader."""
        if self.objective.evaluate is not None:
            return self.objective.evaluate()
        loss = self.evaluate()
        return None if loss is None else {"val_loss": loss, "val_ppl": math.exp(min(loss, 50))}

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean token loss over the first eval_batches batches of the validation split (same batches each time)."""
        if self.val_loader is None or len(self.val_loader) == 0:
            return None
        saved = self.val_loader.state_dict()
        self.val_loader.load_state_dict({**saved, "epoch": 0, "position": 0})
        self.model.eval()
        loss_sum, count = 0.0, 0
        if self.parallel.pipeline is not None:  # the stages run the batches together (in micro-batch groups)
            batches = [tuple(torch.from_numpy(a).to(self.device) for a in b[:2])
                       for _, b in zip(range(self.cfg.logging.eval_batches), self.val_loader, strict=False)]
            loss_sum, count = self.parallel.pipeline.evaluate(batches, self.autocast)
        for i, batch in enumerate(() if self.parallel.pipeline is not None else self.val_loader):
            x, y, *seg = (torch.from_numpy(a).to(self.device) for a in batch)
            x, y = self._prepare((x, y), -1 - i)  # the same masks at every evaluation, never a training batch's
            with self.autocast():
                logits = self.forward_model(x, segment_ids=seg[0]) if seg else self.forward_model(x)
                loss_sum += float(token_loss_sum(logits, y))
            count += int((y != -100).sum())
            if i + 1 >= self.cfg.logging.eval_batches:
                break
        self.val_loader.load_state_dict(saved)
        self.model.train()
        return None if self.parallel.pipeline is not None and not count else loss_sum / max(count, 1)

    def samples(self) -> list[dict]:
        if self.tokenizer is None or not self.cfg.samples.sample_prompts or not self.objective.causal:
            return []
        self.model.eval()
        eos = self.tokenizer.token_to_id(self.tokenizer.eos_token) if self.tokenizer.eos_token else None
        out = []
        for prompt in self.cfg.samples.sample_prompts:
            with self.autocast():
                new = greedy_completion(self.model, self.tokenizer.encode(prompt, add_special_tokens=False),
                                        self.cfg.samples.sample_tokens, () if eos is None else (eos,))
            out.append({"step": self.step, "prompt": prompt, "text": self.tokenizer.decode(new)})
        self.model.train()
        return out

    # ---- the loop ----

    def fit(self) -> dict:
        cfg = self.cfg
        if self.device.type == "cpu":
            keep_freed_memory()  # no page faults on each step's fresh logits and activations (common/allocator.py)
        if cfg.resume:
            self.resume()
        else:
            self.start_fresh()
        if self.metrics is not None:  # records of the steps this run will (re)do go: never a duplicate step
            self.metrics.truncate_after(self.step)
        self._truncate_samples()
        if self.step == 0 and self.objective.start_record is not None:  # the figures before any update
            start = self.objective.start_record()
            self.last_val = start.get(self.objective.headline)
            self._log({"kind": "val", "step": 0, **start})
        peak = (cfg.logging.peak_tflops * 1e12 if cfg.logging.peak_tflops
                else measure_peak_flops(self.device, DTYPES[self.precision]))
        batches = self._batches()
        self.model.train()
        status, window_tokens, window_start = "finished", 0, time.perf_counter()
        unit, rate = self.objective.unit, self.objective.unit == "tokens"  # progress lines show tokens/s only
        sched, last = cfg.schedule, cfg.schedule.max_steps
        with StopRequest() as stop, TrainProgress(last, self.step, cfg.logging.progress and self.is_main,
                                                  label=self.label, log=self.log, tokens=self.tokens_seen,
                                                  val_name=self.objective.headline_label) as bar:
            while self.step < last:
                tick_threads(cfg.threads)  # --threads pins; unset: fewer threads while the CPU is shared
                t0 = time.perf_counter()
                lr = lr_at(self.step, peak=cfg.optim.lr, max_steps=last, warmup_steps=sched.warmup_steps,
                           schedule=sched.lr_schedule, min_ratio=sched.min_lr_ratio,
                           decay_fraction=sched.decay_fraction)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                accum = cfg.batch.grad_accum
                updates = (self.objective.rollout(self.step) if self.objective.rollout is not None else
                           [[self._prepare(next(batches), self.step * accum + i) for i in range(accum)]])
                results = [self._update(micro) for micro in updates]
                result = merge_results(results)
                self.step += 1
                self.tokens_seen += result.tokens
                window_tokens += result.tokens
                self.elapsed += time.perf_counter() - t0
                for one in results:
                    self._count_nonfinite(one)
                if self.step % cfg.logging.log_every == 0 or self.step == last:
                    now = time.perf_counter()
                    tok_s = window_tokens / max(now - window_start, 1e-9)
                    window_tokens, window_start = 0, now
                    mfu = {"mfu": self.flops_per_token * tok_s / peak} if self.flops_per_token else {}
                    self._log({"kind": "train", "step": self.step, "loss": result.loss, "lr": lr,
                               "grad_norm": result.grad_norm, "skipped": result.skipped, unit: self.tokens_seen,
                               f"{unit}_per_s": tok_s, **mfu, "memory_mb": memory_bytes(self.device) / 2**20,
                               **({"loss_scale": self.scaler.get_scale(), "scaler_skipped": self.overflow_total}
                                  if self.scaler is not None else {}),
                               "elapsed_s": self.elapsed, **self.objective.stats()})
                if self.step % cfg.logging.eval_every == 0 or self.step == last:
                    figures = self._eval_figures()
                    if figures is not None:
                        self.last_val = figures[self.objective.headline]
                        self._log({"kind": "val", "step": self.step, **figures})
                if self.step % cfg.samples.sample_every == 0 or self.step == last:
                    samples = (self.samples() if self.parallel.can_sample and (self.is_main or self.parallel.mode ==
                                                                               "fsdp") else [])
                    if self.is_main:
                        self._write_samples(samples)
                bar.update(self.step, math.nan if result.loss is None else result.loss, self.last_val,
                           self.tokens_seen if rate else None)
                stopping = self.parallel.any(bool(stop))  # every rank stops at the same step
                if stopping or self.step % cfg.checkpoint.checkpoint_every == 0 or self.step == last:
                    self.save()
                if stopping:
                    status = "interrupted"
                    self.log(f"stopped by signal {stop.signal or '(on another rank)'} at step {self.step}; "
                             f"checkpoint saved, resume with --resume")
                    break
        if self.metrics is not None:
            self.metrics.close()
        if self.masters is not None:  # the fp32 weights go back into the model for the export / evaluation after
            self.masters.restore(self.optimizer)
            self.masters = None
        return {"status": status, "step": self.step, "tokens": self.tokens_seen, "elapsed_s": self.elapsed,
                "val_loss": self.last_val, "nonfinite_steps": self.nonfinite_total,
                "scaler_skipped_steps": self.overflow_total}

    def _update(self, micro: list[tuple]) -> StepResult:
        """One optimizer update over `micro` (its micro-batches): backward, clip, finite check, step or skip."""
        if self.parallel.pipeline is not None:  # the pipeline schedule runs forward and backward over the stages
            tokens = max(self.token_count_reduce(count_targets(micro)), 1)
            loss = self.parallel.pipeline.step(micro, tokens, self.autocast)
        else:
            loss, tokens = accumulate_gradients(
                self.forward_model, micro, autocast=self.autocast,
                scale=self.scaler.scale if self.scaler else (lambda x: x),
                extra_losses=self.extra_losses, token_count_reduce=self.token_count_reduce, loss_fn=self.loss_fn,
                loss_sum_reduce=self.parallel.sum,
                no_sync=lambda last: self.parallel.no_sync(self.forward_model, last),
                batch_loss=self.objective.batch_loss, count=self.objective.count or count_targets)
        grads = gradient_bytes(self.optimizer) if self.meter is not None else 0
        result = optimizer_step(self.model, self.optimizer, loss, tokens, self.cfg.optim.grad_clip, self.scaler,
                                clip=self.parallel.clip)
        if self.meter is not None:
            self._log({"step": self.step + 1, **model_state_record(self.parallel, self.meter, grads, self.optimizer)})
            self.meter = None
        if self.objective.after_step is not None and not result.skipped:
            self.objective.after_step()
        return result

    def _count_nonfinite(self, result) -> None:
        if result.overflow:  # fp16's loss scaler skipped the update: expected now and then, not a fault
            self.overflow_total += 1
            self.log(f"step {self.step}: fp16 gradients overflowed; update skipped by the loss scaler, scale now "
                     f"{self.scaler.get_scale():g} ({self.overflow_total} skipped so far)")
        if not result.skipped:
            self.nonfinite_in_row = 0
            return
        self.nonfinite_in_row += 1
        self.nonfinite_total += 1
        self.log(f"step {self.step}: non-finite loss or gradients (loss={result.loss}, grad norm="
                 f"{result.grad_norm}); update skipped ({self.nonfinite_in_row} in a row)")
        if self.nonfinite_in_row >= self.cfg.max_nonfinite:
            raise LmforgeError(f"{self.nonfinite_in_row} non-finite steps in a row (max_nonfinite="
                               f"{self.cfg.max_nonfinite}) at step {self.step}: training diverged; lower lr, "
                               f"check the data, or resume from an earlier checkpoint in {self.ckpt_dir}")

    def _log(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.log(record)

    def _truncate_samples(self) -> None:
        """Drop sample records of steps a resumed run will redo (all of them on a fresh start)."""
        path = self.run_dir / "samples.jsonl"
        if self.is_main and path.is_file():
            kept = [json.dumps(r) for r in read_metrics(path) if r["step"] <= self.step]
            path.write_text("".join(line + "\n" for line in kept))

    def _write_samples(self, samples: list[dict]) -> None:
        if samples:
            with (self.run_dir / "samples.jsonl").open("a") as handle:
                handle.writelines(json.dumps(s) + "\n" for s in samples)
