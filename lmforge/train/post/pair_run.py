"""Preference-pair runs (reward model, DPO family) as objectives of the one Trainer loop: the TrainConfig of a pair
run, the pair count its loss is averaged over, the per-step statistics window, and the run itself — so both
commands get atomic checkpoints, exact resume, the non-finite guard, gradient accumulation, progress and metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from lmforge.common.config_fields import leaves
from lmforge.common.config_io import flat_dict
from lmforge.train.config import TrainConfig
from lmforge.train.objectives import Objective
from lmforge.train.post.preference_data import PairLoader
from lmforge.train.precision import resolve_device
from lmforge.train.trainer import Trainer
from lmforge.train.trainer_checkpoints import check_fresh_start


def check_pair_out(cfg) -> None:
    """Before any loading: a run that would start over existing checkpoints without --fresh is refused."""
    if not cfg.resume:
        check_fresh_start(cfg.out, cfg.fresh)


def run_device(cfg) -> torch.device:
    """The device of a pair run (--device): the model goes there before its reference / held-out figures."""
    return resolve_device(cfg.device)


def pair_train_config(cfg) -> TrainConfig:
    """The Trainer's view of a RewardConfig / DPOConfig: fp32 on --device (the reference log-probs and the held-out
    evaluations run on the same model), cosine schedule, a train record every step, no samples, no export."""
    knobs = flat_dict(cfg)
    shared = {name: knobs[name] for name in leaves(TrainConfig) if name in knobs and name != "export_hf"}
    return TrainConfig.from_dict({**shared, "device": cfg.device, "precision": "fp32", "seq_len": cfg.data.max_len,
                                  "eval_batches": 1, "sample_prompts": (), "sample_every": cfg.schedule.max_steps,
                                  "peak_tflops": 1.0, "export_hf": False})


def count_pairs(micro_batches: Sequence[tuple]) -> int:
    """The units a pair objective's loss is averaged over: the pairs of the step's micro-batches."""
    return sum(len(batch[0]) for batch in micro_batches)


class StepStats:
    """Per-pair figures of the micro-batches of one step (reward accuracy, margins), weighted by their pair
    counts; `pop()` (the objective's stats hook, called once per logged step) returns their mean and starts over."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._count = 0

    def add(self, n: int, stats: dict[str, float]) -> None:
        for key, value in stats.items():
            self._sums[key] = self._sums.get(key, 0.0) + n * value
        self._count += n

    def pop(self) -> dict[str, float]:
        out = {k: v / max(self._count, 1) for k, v in self._sums.items()}
        self._sums, self._count = {}, 0
        return out


def pair_objective(name: str, batch_loss: Callable[[nn.Module, tuple], torch.Tensor], stats: StepStats,
                   evaluate: Callable[[], dict[str, float]], headline: str, headline_label: str,
                   before: dict[str, float]) -> Objective:
    """An Objective over pair batches: batch_loss(model, (indices,)) -> the SUM of the pairs' losses; evaluate()
    -> the held-out figures (headline among them); before: step 0's held-out figures."""
    return Objective(names=[name], batch_loss=batch_loss, count=count_pairs, unit="pairs", stats=stats.pop,
                     evaluate=evaluate, headline=headline, headline_label=headline_label,
                     start_record=lambda: dict(before))


def train_pairs(cfg, model: nn.Module, n_train: int, objective: Objective, label: str, log) -> dict:
    """Run the Trainer on `n_train` pairs (fresh, or --resume from the newest checkpoint in cfg.out); returns its
    summary (status, step, elapsed_s, nonfinite_steps, ...)."""
    loader = PairLoader(n_train, cfg.batch.batch_size, cfg.seed, cfg.data.max_len)
    trainer = Trainer(pair_train_config(cfg), model, loader, run_dir=cfg.out, log=log, objective=objective,
                      label=label)
    return trainer.fit()
