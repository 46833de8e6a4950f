"""`train_reward_model(RewardConfig)`: the run behind `lmforge rm` — a scalar head on a loaded LM backbone, trained
with the Bradley-Terry loss on preference pairs (embedded task or JSONL), held-out pairwise accuracy measured
before and after, the loss an objective of the one Trainer loop (pair_run.py: checkpoints, --resume, the
non-finite guard, metrics), and the reward model saved for PPO / GRPO (`load_reward_model`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from lmforge.formats.loader import load
from lmforge.train.objectives import Objective
from lmforge.train.post.pair_config import RewardConfig
from lmforge.train.post.pair_run import StepStats, check_pair_out, pair_objective, run_device, train_pairs
from lmforge.train.post.pairs import EncodedPair
from lmforge.train.post.preference_data import load_preference_data
from lmforge.train.post.reward_model import bradley_terry_loss, pair_scores, pairwise_accuracy, save_reward_model
from lmforge.train.post.run_log import heldout_warning, write_run_report
from lmforge.train.post.value_head import ScalarHead
from lmforge.train.pretrain import seed_everything


def train_reward_model(cfg: RewardConfig, log=print) -> dict:
    """Train in the Trainer loop (resumable), evaluate before/after on the held-out pairs, save; returns the
    summary."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    check_pair_out(cfg)
    seed_everything(cfg.seed)
    run_dir = Path(cfg.out)
    lm = load(cfg.model)
    train, heldout, train_enc, heldout_enc = load_preference_data(lm.tokenizer, **asdict(cfg.data))
    pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    head = ScalarHead(lm.model).to(run_device(cfg))  # init from the seeded RNG; a resumed run restores it
    kinds = [p.kind for p in heldout]
    before = pairwise_accuracy(head, heldout_enc, pad_id=pad_id, kinds=kinds)
    log(f"reward model on {cfg.model} ({lm.config.num_params() / 1e6:.2f}M): {len(train)} train / {len(heldout)} "
        f"held-out pairs; held-out pairwise accuracy before {before['accuracy']:.3f}")
    warning = heldout_warning(len(heldout), "pairs", "pairwise accuracy")
    if warning:
        log(warning)
    objective = reward_objective(head, train_enc, heldout_enc, pad_id, before)
    run = train_pairs(cfg, head, len(train_enc), objective, "rm", log)
    if run["status"] != "finished":
        return run
    after = pairwise_accuracy(head, heldout_enc, pad_id=pad_id, kinds=kinds)
    out_dir = save_reward_model(head, lm.tokenizer, run_dir / "reward_model", {"max_len": cfg.data.max_len,
                                                                             "base": cfg.model})
    summary = {"config": asdict(cfg), "train_pairs": len(train), "heldout_pairs": len(heldout),
               "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
               "margin_before": before["margin"], "margin_after": after["margin"],
               "heldout_loss_before": before["loss"], "heldout_loss_after": after["loss"], "steps": run["step"],
               "skipped_steps": run["nonfinite_steps"], "elapsed_s": run["elapsed_s"], "reward_model": str(out_dir),
               "per_kind_before": {k: v for k, v in before.items() if k.startswith("accuracy_")},
               "per_kind_after": {k: v for k, v in after.items() if k.startswith("accuracy_")}}
    report = write_run_report(run_dir, "Reward model (Bradley-Terry)", summary,
                              {f"held-out pairwise accuracy, {len(heldout)} pairs": (before["accuracy"],
                                                                                   after["accuracy"]),
                               "held-out mean margin r_w - r_l": (before["margin"], after["margin"])}, [warning])
    log(f"held-out pairwise accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} on {len(heldout)} pairs in "
        f"{run['elapsed_s']:.0f} s; reward model {out_dir}; report {report}")
    return summary


def reward_objective(head: ScalarHead, train_enc: Sequence[EncodedPair], heldout_enc: Sequence[EncodedPair],
                     pad_id: int, before: dict[str, float]) -> Objective:
    """The Bradley-Terry loss of a batch of pair indices (summed over its pairs) and the held-out pairwise accuracy
    and mean margin, as a Trainer objective."""
    stats = StepStats()

    def batch_loss(model, batch: tuple) -> torch.Tensor:
        chosen, rejected = pair_scores(model, [train_enc[i] for i in batch[0].tolist()], pad_id)
        stats.add(len(chosen), {"accuracy": float((chosen > rejected).float().mean()),
                                "margin": float((chosen - rejected).mean().detach())})
        return bradley_terry_loss(chosen, rejected) * len(chosen)

    def evaluate() -> dict[str, float]:
        held = pairwise_accuracy(head, heldout_enc, pad_id=pad_id)
        return {"heldout_accuracy": held["accuracy"], "heldout_margin": held["margin"]}

    return pair_objective("Bradley-Terry", batch_loss, stats, evaluate, "heldout_accuracy", "held-out accuracy",
                          {"heldout_accuracy": before["accuracy"], "heldout_margin": before["margin"]})
