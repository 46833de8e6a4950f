"""`train_prm(PRMConfig)`: the run behind `lmforge prm train` — a process reward model (prm.py: the reward
model's scalar head read at every step end, binary cross-entropy on step labels) as an objective of the one Trainer
loop (checkpoints, --resume, the non-finite guard, metrics), held-out step accuracy and error recall measured before
and after, and the model saved as a reward-model directory; `load_prm` gives best-of-N and RL its step scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.common.threads import torch_threads
from lmforge.formats.loader import load
from lmforge.train.objectives import Objective
from lmforge.train.post.pair_run import StepStats, check_pair_out, pair_train_config, run_device
from lmforge.train.post.preference_data import PairLoader
from lmforge.train.post.prm import (
    EncodedSteps,
    aggregate,
    encode_steps,
    heldout_step_figures,
    outcome_row,
    step_loss,
    step_probs,
)
from lmforge.train.post.prm_config import PRMConfig
from lmforge.train.post.prm_data import read_step_jsonl, split_records, step_solutions
from lmforge.train.post.prm_surprisal import SurprisalHead, save_surprisal, with_surprisal
from lmforge.train.post.reward_model import HEAD_FILE, META_FILE, load_reward_model, save_reward_model
from lmforge.train.post.run_log import heldout_warning, write_run_report
from lmforge.train.post.value_head import ScalarHead
from lmforge.train.pretrain import seed_everything
from lmforge.train.trainer import Trainer


def load_step_records(cfg: PRMConfig) -> tuple[list[dict], list[dict]]:
    data = cfg.data
    if data.data is None:
        return (step_solutions(data.train_solutions, "train", data.task_seed),
                step_solutions(data.heldout_solutions, "heldout", data.task_seed))
    records = read_step_jsonl(data.data)
    train, heldout = (records, read_step_jsonl(data.heldout)) if data.heldout else split_records(records)
    if not train:
        raise LmforgeError(f"{data.data} leaves no training solutions after the held-out split")
    return train[:data.train_solutions], heldout[:data.heldout_solutions]


def encode_records(tokenizer, records: Sequence[dict], cfg: PRMConfig) -> list[EncodedSteps]:
    """Each record's tokens and step ends with its step labels, or (--outcome-labels) only its "correct" label at
    its last step's end."""
    max_len = cfg.data.max_len
    rows = [encode_steps(tokenizer, r["prompt"], r["steps"], r["labels"], max_len) for r in records]
    if not cfg.data.outcome_labels:
        return rows
    missing = next((r for r in records if "correct" not in r), None)
    if missing is not None:
        raise LmforgeError(f"--outcome-labels needs a \"correct\" field (0/1: the final answer is right) in every "
                           f"record; the one with prompt {missing['prompt'][:60]!r} has none")
    return [outcome_row(e, len(r["steps"]), r["correct"], max_len) for e, r in zip(rows, records, strict=True)]


def prm_objective(head: ScalarHead, rows: Sequence[EncodedSteps], held: Sequence[EncodedSteps], pad_id: int,
                  before: dict[str, float]) -> Objective:
    """BCE summed over the micro-batch's steps (the unit the loss is averaged over) and the held-out figures."""
    stats, steps = StepStats(), [len(r.ends) for r in rows]

    def batch_loss(model, batch: tuple) -> torch.Tensor:
        loss, n, accuracy = step_loss(model, [rows[i] for i in batch[0].tolist()], pad_id)
        stats.add(n, {"step_accuracy": accuracy})
        return loss

    def evaluate() -> dict[str, float]:
        if not held:  # nothing held out: the headline is not measured
            return {"heldout_step_accuracy": float("nan")}
        return {f"heldout_{k}": v for k, v in heldout_step_figures(head, held, pad_id).items()}

    return Objective(names=["binary cross-entropy (process reward, per step)"], batch_loss=batch_loss,
                     count=lambda micro: sum(steps[i] for batch in micro for i in batch[0].tolist()), unit="steps",
                     stats=stats.pop, evaluate=evaluate, headline="heldout_step_accuracy",
                     headline_label="held-out step accuracy",
                     start_record=lambda: {f"heldout_{k}": v for k, v in before.items()})


def train_prm(cfg: PRMConfig, log=print) -> dict:
    """Train in the Trainer loop (resumable), evaluate before / after on held-out solutions, save OUT/prm; returns
    the summary (also OUT/summary.json)."""
    with torch_threads(cfg.threads):
        return _train(cfg, log)


def _train(cfg: PRMConfig, log) -> dict:
    check_pair_out(cfg)
    train, heldout = load_step_records(cfg)
    seed_everything(cfg.seed)
    lm = load(cfg.model)
    if lm.tokenizer is None:
        raise LmforgeError(f"{cfg.model} has no tokenizer; a process reward model needs one")
    pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    head_class = SurprisalHead if cfg.step_surprisal else ScalarHead
    head = head_class(lm.model).to(run_device(cfg))  # init from the seeded RNG; a resumed run restores it
    rows, held = encode_records(lm.tokenizer, train, cfg), encode_records(lm.tokenizer, heldout, cfg)
    before = heldout_step_figures(head, held, pad_id) if held else {}
    n_steps = sum(len(r.ends) for r in rows)
    outcome = cfg.data.outcome_labels  # one label per solution: an outcome reward model with the PRM's head
    title = "Outcome reward model (BCE on the final answer, the PRM's head)" if outcome else \
        "Process reward model (per-step BCE)"
    log(f"{title} on {cfg.model} ({lm.config.num_params() / 1e6:.2f}M): {len(rows)} train solutions "
        f"({n_steps} {'final answers' if outcome else 'steps'}, {sum(v == 0 for r in rows for v in r.labels)} wrong) "
        f"/ {len(held)} held-out; held-out "
        f"step accuracy before {before.get('step_accuracy', float('nan')):.3f}")
    warning = heldout_warning(len(held), "solutions", "held-out step accuracy")
    if warning:
        log(warning)
    loader = PairLoader(len(rows), cfg.batch.batch_size, cfg.seed, cfg.data.max_len)
    trainer = Trainer(pair_train_config(cfg), head, loader, run_dir=cfg.out, log=log,
                      objective=prm_objective(head, rows, held, pad_id, before), label="prm")
    run = trainer.fit()
    if run["status"] != "finished":
        return run
    after = heldout_step_figures(head, held, pad_id) if held else {}
    out_dir = save_reward_model(head, lm.tokenizer, Path(cfg.out) / "prm", {"max_len": cfg.data.max_len,
                                                                           "base": cfg.model, "process": True,
                                                                           "outcome_labels": outcome,
                                                                           "step_surprisal": cfg.step_surprisal})
    if cfg.step_surprisal:
        save_surprisal(head, out_dir)
    summary = {"config": asdict(cfg), "train_solutions": len(rows), "heldout_solutions": len(held),
               **{f"{k}_before": v for k, v in before.items()}, **{f"{k}_after": v for k, v in after.items()},
               "steps": run["step"], "skipped_steps": run["nonfinite_steps"], "elapsed_s": run["elapsed_s"],
               "prm": str(out_dir)}
    figures = {f"held-out {k.replace('_', ' ')}, {len(held)} solutions": (before[k], after[k])
               for k in ("step_accuracy", "error_recall", "solution_accuracy")} if held else {}
    report = write_run_report(Path(cfg.out), title, summary, figures, [warning])
    log(f"held-out step accuracy {before.get('step_accuracy', float('nan')):.3f} -> "
        f"{after.get('step_accuracy', float('nan')):.3f}, error recall {before.get('error_recall', float('nan')):.3f}"
        f" -> {after.get('error_recall', float('nan')):.3f} on {len(held)} solutions in {run['elapsed_s']:.0f} s; "
        f"prm {out_dir}; report {report}")
    return summary


class ProcessRewardModel:
    """A trained PRM: `step_scores(prompt, steps)` -> P(correct) per step; `score(prompt, steps, how)` -> min/prod."""

    def __init__(self, head: ScalarHead, tokenizer, max_len: int) -> None:
        self.head, self.tokenizer, self.max_len = head.eval(), tokenizer, max_len
        self.pad_id = head.config.pad_token_id if head.config.pad_token_id is not None else 0

    def step_scores_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        rows = [encode_steps(self.tokenizer, p, s, None, self.max_len) for p, s in items]
        return step_probs(self.head, rows, self.pad_id)

    def step_scores(self, prompt: str, steps: Sequence[str]) -> list[float]:
        return self.step_scores_batch([(prompt, steps)])[0]

    def outcome_scores_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[float]:
        """P(final answer right) per solution, read as an --outcome-labels model was trained: at the solution's
        last newline, with --step-surprisal its surprise summed over the whole solution (not the last step's)."""
        rows = [outcome_row(encode_steps(self.tokenizer, p, s, None, self.max_len), len(s), 1, self.max_len)
                for p, s in items]
        return [p[0] for p in step_probs(self.head, rows, self.pad_id)]

    def score(self, prompt: str, steps: Sequence[str], how: str = "min") -> float:
        return aggregate(self.step_scores(prompt, steps), how)


def check_prm_dir(directory: str | Path, outcome_ok: bool = False) -> None:
    """A process reward model directory (its reward_model.json says "process": true), or a one-line error; reads
    no weights, so a command can check it before loading anything. One trained with --outcome-labels is refused
    unless outcome_ok (its scores before the last step were never trained: no dense reward)."""
    path = Path(directory)
    if not (path / HEAD_FILE).is_file() or not (path / META_FILE).is_file():
        raise LmforgeError(f"{directory} is not a process reward model directory ({HEAD_FILE} and {META_FILE} "
                           f"expected); train one with `lmforge prm train` and pass its OUT/prm")
    meta = json.loads((path / META_FILE).read_text())
    if not meta.get("process"):
        raise LmforgeError(f"{directory} is an outcome reward model (`lmforge rm`: one score per answer), not a "
                           f"process reward model; train one with `lmforge prm train` (or use --reward-model)")
    if meta.get("outcome_labels") and not outcome_ok:
        raise LmforgeError(f"{directory} was trained with --outcome-labels (one score per solution, at its last "
                           f"step), not per step; train a process reward model without that flag")


def load_prm(directory: str | Path, device: torch.device | str = "cpu", outcome_ok: bool = False) -> ProcessRewardModel:
    """A PRM saved by `lmforge prm train` (OUT/prm: the backbone, score_head.safetensors, reward_model.json), on
    `device` (the policy's, in RL); outcome_ok: also one trained with --outcome-labels (read its last step's score)."""
    check_prm_dir(directory, outcome_ok)
    rm = load_reward_model(directory)
    head = rm.head
    if json.loads((Path(directory) / META_FILE).read_text()).get("step_surprisal"):
        head = with_surprisal(head, directory)
    return ProcessRewardModel(head.to(device), rm.tokenizer, rm.max_len)
