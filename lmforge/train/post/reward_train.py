"""`train_reward_model(RewardConfig)`: the run behind `lmforge rm` — a scalar head on a loaded LM backbone, trained
with the Bradley-Terry loss on preference pairs (embedded task or JSONL), held-out pairwise accuracy measured
before and after, the run logged with RunLog and the reward model saved for PPO / GRPO (`load_reward_model`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lmforge.model.loader import load
from lmforge.train.number_format import eta_text
from lmforge.train.optim import build_optimizer
from lmforge.train.post.preference_data import batch_order, check_pair_run, load_preference_data, set_lr
from lmforge.train.post.reward_model import bradley_terry_loss, pair_scores, pairwise_accuracy, save_reward_model
from lmforge.train.post.run_log import RunLog, heldout_warning
from lmforge.train.post.value_head import ScalarHead
from lmforge.train.step import optimizer_step


@dataclass(frozen=True)
class RewardConfig:
    """model: an LM to start the backbone from (HF dir, .gguf or smollm2-135m). data: a JSONL of {prompt, chosen,
    rejected} (None: the embedded preference task). The trained model goes to out/reward_model."""

    model: str
    out: str = "runs/rm"
    data: str | None = None
    train_pairs: int = 2000
    heldout_pairs: int = 400
    task_seed: int = 0
    max_len: int = 256
    max_steps: int = 250
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 50
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        check_pair_run(self)


def train_reward_model(cfg: RewardConfig, log=print) -> dict:
    """Train, evaluate before/after on the held-out pairs, save; returns the summary."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = Path(cfg.out)
    lm = load(cfg.model)
    train, heldout, train_enc, heldout_enc = load_preference_data(lm.tokenizer, cfg.data, cfg.train_pairs,
                                                                  cfg.heldout_pairs, cfg.task_seed, cfg.max_len)
    pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    head = ScalarHead(lm.model)
    head.train()
    optimizer = build_optimizer(head, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95), eps=1e-8)
    runlog = RunLog(run_dir, log=lambda message: None)
    kinds = [p.kind for p in heldout]
    before = pairwise_accuracy(head, heldout_enc, pad_id=pad_id, kinds=kinds)
    log(f"reward model on {cfg.model} ({lm.config.num_params() / 1e6:.2f}M): {len(train)} train / {len(heldout)} "
        f"held-out pairs; held-out pairwise accuracy before {before['accuracy']:.3f}")
    warning = heldout_warning(len(heldout), "pairs", "pairwise accuracy")
    if warning:
        log(warning)
    runlog.log({"step": 0, "heldout_accuracy": before["accuracy"], "heldout_margin": before["margin"]})
    start = time.time()
    batches = batch_order(len(train_enc), cfg.batch_size, cfg.seed)
    skipped = 0
    for step in range(cfg.max_steps):
        lr = set_lr(optimizer, step, cfg.lr, cfg.max_steps, cfg.warmup_steps)
        chosen, rejected = pair_scores(head, [train_enc[i] for i in next(batches)], pad_id)
        loss = bradley_terry_loss(chosen, rejected)
        loss.backward()
        result = optimizer_step(head, optimizer, float(loss.detach()), len(chosen), cfg.grad_clip)
        skipped += result.skipped
        record = {"step": step + 1, "loss": result.loss, "accuracy": float((chosen > rejected).float().mean()),
                  "margin": float((chosen - rejected).mean().detach()), "lr": lr, "grad_norm": result.grad_norm}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.max_steps:
            held = pairwise_accuracy(head, heldout_enc, pad_id=pad_id)
            record.update(heldout_accuracy=held["accuracy"], heldout_margin=held["margin"])
            log(f"step {step + 1}/{cfg.max_steps} loss {result.loss:.4f} held-out accuracy {held['accuracy']:.3f}; "
                f"{eta_text(step + 1, cfg.max_steps, time.time() - start)}")
        runlog.log(record)
    after = pairwise_accuracy(head, heldout_enc, pad_id=pad_id, kinds=kinds)
    elapsed = time.time() - start
    out_dir = save_reward_model(head, lm.tokenizer, run_dir / "reward_model", {"max_len": cfg.max_len,
                                                                             "base": cfg.model})
    summary = {"config": asdict(cfg), "train_pairs": len(train), "heldout_pairs": len(heldout),
               "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
               "margin_before": before["margin"], "margin_after": after["margin"],
               "heldout_loss_before": before["loss"], "heldout_loss_after": after["loss"], "steps": cfg.max_steps,
               "skipped_steps": skipped, "elapsed_s": elapsed, "reward_model": str(out_dir),
               "per_kind_before": {k: v for k, v in before.items() if k.startswith("accuracy_")},
               "per_kind_after": {k: v for k, v in after.items() if k.startswith("accuracy_")}}
    report = runlog.finish("Reward model (Bradley-Terry)", summary,
                           {f"held-out pairwise accuracy, {len(heldout)} pairs": (before["accuracy"],
                                                                                after["accuracy"]),
                            "held-out mean margin r_w - r_l": (before["margin"], after["margin"])}, [warning])
    log(f"held-out pairwise accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} on {len(heldout)} pairs in "
        f"{elapsed:.0f} s; reward model {out_dir}; report {report}")
    return summary
