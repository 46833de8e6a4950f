"""One stage of `lmforge vlm` as an objective of the one Trainer loop (checkpoints, --resume, progress, metrics):
cross-entropy on the assistant's answer tokens only, the held-out figures (VQA exact match, caption loss) before and
after, and the freezing rule checked: what a stage must not train is byte-for-byte the same after it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.train.config import TrainConfig
from lmforge.train.metrics import read_metrics
from lmforge.train.objectives import Objective
from lmforge.train.post.preference_data import PairLoader
from lmforge.train.trainer import Trainer
from lmforge.train.vlm_data import IGNORE, Example, collate


def answer_loss_sum(model: nn.Module, examples: list[Example], pixels: torch.Tensor, pad_id: int) -> tuple:
    """(summed cross-entropy over the answer tokens, their count)."""
    ids, targets, images = collate(examples, pad_id)
    ids, targets = ids.to(pixels.device), targets.to(pixels.device)  # collated on the CPU; pixels sit on the device
    where = targets != IGNORE
    logits = model(ids, pixels[images], where)
    return F.cross_entropy(logits, targets[where], reduction="sum"), int(where.sum())


@torch.no_grad()
def mean_answer_loss(model: nn.Module, examples: list[Example], pixels: torch.Tensor, pad_id: int,
                     batch_size: int = 64) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss, n = answer_loss_sum(model, examples[start:start + batch_size], pixels, pad_id)
        total, count = total + float(loss), count + n
    model.train(was_training)
    return total / max(count, 1)


def fingerprints(named: dict[str, torch.Tensor]) -> dict[str, str]:
    """A sha1 of every tensor's bytes: the exact check that a frozen weight did not move."""
    return {k: hashlib.sha1(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
            for k, t in named.items()}


def split_params(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(trainable, frozen) parameters by name."""
    trainable, frozen = {}, {}
    for name, p in model.named_parameters():
        (trainable if p.requires_grad else frozen)[name] = p
    return trainable, frozen


def finished_figures(train_config: TrainConfig) -> tuple[dict, dict] | None:
    """(before, after) held-out figures of a stage this run directory already finished (its metrics.jsonl has the
    step-0 and last-step evaluations), so --resume skips both evaluations; None otherwise."""
    path = Path(train_config.out) / "metrics.jsonl"
    if not train_config.resume or not path.is_file():
        return None
    val = {r["step"]: r for r in read_metrics(path) if r.get("kind") == "val"}
    last = train_config.schedule.max_steps
    if 0 not in val or last not in val:
        return None
    return tuple({k: v for k, v in val[s].items() if k not in ("kind", "step")} for s in (0, last))


def run_stage(stage: int, model: nn.Module, examples: list[Example], pixels: torch.Tensor, pad_id: int,
              evaluate: Callable[[], dict[str, float]], train_config: TrainConfig, lr_scales: dict[str, float],
              log, before: dict[str, float] | None = None) -> dict:
    """Train the model's trainable parameters on `examples` in the Trainer; returns the stage's record: figures
    before / after, parameters trained, images/s, and the freezing check. `before`: the held-out figures of the
    model as it is (the previous stage's after), else measured here."""
    trainable, frozen = split_params(model)
    if not trainable:
        raise LmforgeError(f"stage {stage} has nothing to train")
    frozen_before, trained_before = fingerprints(frozen), fingerprints(trainable)
    finished = finished_figures(train_config)
    before = finished[0] if finished else before if before is not None else evaluate()
    last: dict[str, dict] = {"figures": finished[1] if finished else before}

    def evaluate_and_keep() -> dict[str, float]:
        last["figures"] = evaluate()
        return last["figures"]

    def batch_loss(module: nn.Module, batch: tuple) -> torch.Tensor:
        return answer_loss_sum(module, [examples[i] for i in batch[0].tolist()], pixels, pad_id)[0]

    def count(micro: list[tuple]) -> int:
        return sum(len(examples[i].answer) for batch in micro for i in batch[0].tolist())

    def param_groups(module: nn.Module) -> list[dict]:
        groups: dict[float, list] = {}
        for name, p in module.named_parameters():
            if p.requires_grad:
                scale = next((s for key, s in lr_scales.items() if key in name), 1.0)
                groups.setdefault(scale, []).append(p)
        return [{"params": ps, "lr_scale": s} for s, ps in groups.items()]

    objective = Objective(names=[f"vlm stage {stage}: answer-token cross-entropy"], batch_loss=batch_loss,
                          count=count, unit="tokens", evaluate=evaluate_and_keep, headline="vqa_exact_match",
                          headline_label="VQA EM", start_record=lambda: dict(before), param_groups=param_groups)
    loader = PairLoader(len(examples), train_config.batch.batch_size, train_config.seed,
                        max(len(e.prompt) + len(e.answer) for e in examples))
    trainer = Trainer(train_config, model, loader, run_dir=train_config.out, log=log, objective=objective,
                      label=f"vlm stage {stage}")
    start = time.perf_counter()
    run = trainer.fit()
    seconds = time.perf_counter() - start
    frozen_same = fingerprints(frozen) == frozen_before
    trained_moved = fingerprints(trainable) != trained_before or finished is not None  # restored: trained before
    if not frozen_same:
        moved = [k for k, v in fingerprints(frozen).items() if v != frozen_before[k]]
        raise LmforgeError(f"stage {stage} changed frozen parameters: {moved[:5]}")
    images = run["step"] * train_config.batch.batch_size
    return {"stage": stage, "examples": len(examples), "steps": run["step"], "status": run["status"],
            "params_trained": sum(p.numel() for p in trainable.values()), "trained_names": sorted(trainable),
            "before": before, "after": last["figures"], "frozen_unchanged": frozen_same,
            "trained_changed": trained_moved, "seconds": round(run["elapsed_s"], 2),
            "images_per_s": images / max(run["elapsed_s"], 1e-9), "wall_s": round(seconds, 2),
            "run_dir": str(Path(train_config.out))}
