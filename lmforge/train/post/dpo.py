"""`train_dpo(DPOConfig)`: the run behind `lmforge dpo` — preference optimisation of a loaded LM with DPO, IPO,
conservative DPO, SimPO or ORPO (preference_losses.py). The reference is the policy as loaded; its sequence
log-probabilities are computed ONCE, before training, for every train and held-out pair (so no second model is
kept). Held-out win rate: the share of pairs whose chosen answer gets a higher sequence log-prob than the rejected.
The loss is an objective of the one Trainer loop (pair_run.py): checkpoints, --resume, the non-finite guard.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from lmforge.common.threads import set_threads, tick
from lmforge.formats.loader import load
from lmforge.peft.lora import LoraConfig, apply_lora, unload_lora
from lmforge.peft.peft_io import save_adapter
from lmforge.train.objectives import Objective
from lmforge.train.post.pair_config import DPOConfig
from lmforge.train.post.pair_run import StepStats, check_pair_out, pair_objective, run_device, train_pairs
from lmforge.train.post.pairs import EncodedPair, collate_pairs, sequence_logprobs
from lmforge.train.post.preference_data import load_preference_data
from lmforge.train.post.preference_losses import NEEDS_REFERENCE, preference_loss
from lmforge.train.post.run_log import heldout_warning, write_run_report
from lmforge.train.pretrain import seed_everything


def completion_lengths(pairs: Sequence[EncodedPair]) -> tuple[torch.Tensor, torch.Tensor]:
    chosen = torch.tensor([float(len(p.chosen.ids) - p.chosen.start) for p in pairs])
    rejected = torch.tensor([float(len(p.rejected.ids) - p.rejected.start) for p in pairs])
    return chosen, rejected


@torch.no_grad()
def pair_logprobs(model, pairs: Sequence[EncodedPair], batch_size: int = 8,
                  pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """([N] chosen, [N] rejected) summed completion log-probs, without gradients (the reference's, or an eval), in
    the pairs' order. Batches of `batch_size` pairs of similar length (sorted), so few rows are padding. On a
    shared CPU the thread governor (common/threads.py) drops to fewer OpenMP threads: two threads on two busy cores
    spin at each operator's barrier (SmolLM2, LoRA step of 4 pairs at load ~5: 32-34 s with 2 threads, 8-9 s with
    1)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: max(len(pairs[i].chosen.ids), len(pairs[i].rejected.ids)))
    chosen = rejected = torch.zeros(0)
    for i in range(0, len(order), batch_size):
        tick()  # fewer OpenMP threads while other processes use the CPU, unless --threads pinned them
        part = order[i:i + batch_size]
        logp, _ = sequence_logprobs(model, collate_pairs([pairs[j] for j in part], pad_id))
        if i == 0:
            chosen, rejected = logp.new_zeros(len(pairs)), logp.new_zeros(len(pairs))
        chosen[part], rejected[part] = logp[:len(part)], logp[len(part):]
    model.train(was_training)
    return chosen, rejected


def win_figures(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
                beta: float, kinds: Sequence[str] | None = None) -> dict[str, float]:
    """win_rate: share with log pi(y_w) > log pi(y_l); margin: mean implicit reward margin beta * h against the
    reference; win_rate_<kind> per kind."""
    wins = (chosen > rejected).float()
    h = (chosen - ref_chosen) - (rejected - ref_rejected)
    out = {"win_rate": float(wins.mean()), "margin": float(beta * h.mean())}
    for kind in sorted(set(kinds or ())):
        out[f"win_rate_{kind}"] = float(wins[[k == kind for k in kinds]].mean())
    return out


def train_dpo(cfg: DPOConfig, log=print) -> dict:
    """Optimise the policy on the train pairs in the Trainer loop (resumable); held-out win rate of the reference
    (before) and the policy (after)."""
    set_threads(cfg.threads)  # pinned, or (None) governed by the load at each batch and step
    check_pair_out(cfg)
    seed_everything(cfg.seed)
    run_dir, beta = Path(cfg.out), cfg.beta_value
    lm = load(cfg.model)
    policy = lm.model.to(run_device(cfg))
    lora = _apply_lora(policy, cfg, log)
    train, heldout, train_enc, held_enc = load_preference_data(lm.tokenizer, **asdict(cfg.data))
    pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    kinds = [p.kind for p in heldout]
    started = time.time()
    ref_held = pair_logprobs(policy, held_enc, pad_id=pad_id)  # the reference (the policy as loaded), computed once
    ref_train = pair_logprobs(policy, train_enc, pad_id=pad_id) if cfg.loss in NEEDS_REFERENCE else None
    ref_seconds = time.time() - started
    before = win_figures(*ref_held, *ref_held, beta, kinds)
    log(f"{cfg.loss} (beta {beta}) on {cfg.model} ({lm.config.num_params() / 1e6:.2f}M): {len(train)} train / "
        f"{len(heldout)} held-out pairs; reference log-probs precomputed in {ref_seconds:.1f} s; held-out win rate "
        f"of the reference {before['win_rate']:.3f}")
    warning = heldout_warning(len(heldout), "pairs", "win rate")
    if warning:
        log(warning)
    objective = dpo_objective(cfg, policy, train_enc, held_enc, ref_train, ref_held, pad_id, before["win_rate"])
    run = train_pairs(cfg, policy, len(train_enc), objective, "dpo", log)
    if run["status"] != "finished":
        return run
    after = win_figures(*pair_logprobs(policy, held_enc, pad_id=pad_id), *ref_held, beta, kinds)
    if lora is not None:
        save_adapter(policy, lora, run_dir / "adapter", base_model_name=cfg.model)
        unload_lora(policy, merge=True)  # the hf export is the merged model
    if cfg.export_hf:
        lm.save(run_dir / "hf")
    summary = {"config": asdict(cfg), "beta": beta, "train_pairs": len(train), "heldout_pairs": len(heldout),
               "win_rate_reference": before["win_rate"], "win_rate_policy": after["win_rate"],
               "heldout_margin": after["margin"], "steps": run["step"], "skipped_steps": run["nonfinite_steps"],
               "reference_seconds": ref_seconds, "elapsed_s": run["elapsed_s"],
               "per_kind_reference": {k: v for k, v in before.items() if k.startswith("win_rate_")},
               "per_kind_policy": {k: v for k, v in after.items() if k.startswith("win_rate_")}}
    report = write_run_report(run_dir, f"Preference optimisation ({cfg.loss})", summary,
                              {f"held-out win rate (chosen over rejected), {len(heldout)} pairs":
                               (before["win_rate"], after["win_rate"]),
                               "held-out implicit reward margin": (before["margin"], after["margin"])}, [warning])
    log(f"held-out win rate {before['win_rate']:.3f} (reference) -> {after['win_rate']:.3f} ({cfg.loss}) on "
        f"{len(heldout)} pairs in {run['elapsed_s']:.0f} s; implicit reward margin {after['margin']:.3f}; report "
        f"{report}" + (f"; policy {run_dir / 'hf'}" if cfg.export_hf else ""))
    return summary


def _apply_lora(model, cfg: DPOConfig, log) -> LoraConfig | None:
    """LoRA (Hu et al., 2021) on the policy: only the adapters train, so the policy cannot move far from the
    reference (whose log-probs are those of the same model with B = 0, computed after this)."""
    if not cfg.lora.lora_r:
        return None
    knobs = cfg.lora
    lora = LoraConfig(r=knobs.lora_r, alpha=knobs.lora_alpha, dropout=knobs.lora_dropout,
                      target_modules=knobs.lora_targets)
    apply_lora(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"LoRA r={lora.r} alpha={lora.alpha} on {', '.join(lora.target_modules)}: {trainable:,} trainable parameters")
    return lora


def dpo_objective(cfg: DPOConfig, policy, train_enc: Sequence[EncodedPair], held_enc: Sequence[EncodedPair],
                  ref_train: tuple[torch.Tensor, torch.Tensor] | None, ref_held: tuple[torch.Tensor, torch.Tensor],
                  pad_id: int, win_rate_before: float) -> Objective:
    """The DPO-family loss of a batch of pair indices (summed over its pairs) and the held-out win rate and
    implicit reward margin against the precomputed reference, as a Trainer objective."""
    beta, stats = cfg.beta_value, StepStats()
    chosen_len, rejected_len = (t.to(next(policy.parameters()).device) for t in completion_lengths(train_enc))

    def batch_loss(model, batch: tuple) -> torch.Tensor:
        idx = batch[0].cpu()
        logp, _ = sequence_logprobs(model, collate_pairs([train_enc[i] for i in idx.tolist()], pad_id))
        n = len(idx)
        refs = (ref_train[0][idx], ref_train[1][idx]) if ref_train is not None else (None, None)
        out = preference_loss(cfg.loss, logp[:n], logp[n:], *refs, chosen_len[idx], rejected_len[idx], beta=beta,
                              label_smoothing=cfg.label_smoothing, gamma=cfg.gamma, lam=cfg.orpo_lambda,
                              sft_weight=cfg.sft_weight)
        stats.add(n, {k: v for k, v in out.stats().items() if k != "loss"})
        return out.loss * n

    def evaluate() -> dict[str, float]:
        held = win_figures(*pair_logprobs(policy, held_enc, pad_id=pad_id), *ref_held, beta)
        return {"heldout_win_rate": held["win_rate"], "heldout_margin": held["margin"]}

    return pair_objective(f"{cfg.loss} (beta {beta})", batch_loss, stats, evaluate, "heldout_win_rate",
                          "held-out win rate", {"heldout_win_rate": win_rate_before, "heldout_margin": 0.0})
