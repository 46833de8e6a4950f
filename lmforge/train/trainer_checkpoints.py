"""The Trainer's checkpoints: save (safetensors in one process, sharded DCP checkpoints in a distributed run),
resume from the newest valid one exactly (model, optimizer, loader cursor, RNG, counters, the objective's state),
and the guard that keeps a fresh start from overwriting a run. A mixin of trainer.Trainer, whose attributes it reads.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.train import state as st
from lmforge.train.checkpoint import list_checkpoints, save_checkpoint, scan_checkpoints, set_aside


class TrainerCheckpoints:
    def save(self) -> Path | None:
        """Call on every rank. A single process writes safetensors; a distributed run writes sharded DCP checkpoints
        (each rank its own shards, nothing gathered: sharded_checkpoint.py). The loader cursor and RNG saved are
        rank 0's: every rank is at the same cursor, and the RNG streams start from the same seed."""
        rng_tensors, rng_meta = st.rng_state()
        state = {"step": self.step, "tokens_seen": self.tokens_seen, "elapsed_s": self.elapsed,
                 "nonfinite_in_row": self.nonfinite_in_row, "nonfinite_total": self.nonfinite_total,
                 "overflow_total": self.overflow_total,
                 "last_val": self.last_val, "rng": rng_meta,
                 "loader": None if self.train_loader is None else self.train_loader.state_dict(),
                 "objective": None if self.objective.state_dict is None else self.objective.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler else None, "config": self.cfg.to_dict()}
        keep = self.cfg.checkpoint.keep_checkpoints
        if self.parallel.distributed:
            from lmforge.train.sharded_checkpoint import save_sharded  # DCP: imported by distributed runs only

            self.parallel.reshard(self.model)
            self.last_checkpoint = save_sharded(self.ckpt_dir, self.step, self.model, self.optimizer,
                                                {"rng": rng_tensors}, state, keep)
            return self.last_checkpoint if self.parallel.is_main else None
        opt_tensors, state["optimizer"] = st.optimizer_to_tensors(self.optimizer)
        model = st.model_tensors(self.model)
        if self.masters is not None:  # the fp32 masters, not their bf16 roundings: a resume restores them exactly
            model = self.masters.state_tensors(model)
        tensors = {"model": model, "optimizer": opt_tensors, "rng": rng_tensors}
        self.last_checkpoint = save_checkpoint(self.ckpt_dir, self.step, tensors, state, keep=keep)
        return self.last_checkpoint

    def resume(self) -> bool:
        """Restore the newest valid checkpoint; False (and a message) when the run has none yet. Checkpoints that
        exist but are all corrupt are refused (TrainConfig.fresh starts over); corrupt ones newer than the
        checkpoint resumed from are renamed aside to step-N.corrupt, out of the way of retention."""
        ckpt, skipped = scan_checkpoints(self.ckpt_dir, log=self.log)
        if ckpt is None and skipped:
            found = "; ".join(f"{path.name}: {why}" for path, why in skipped)
            raise LmforgeError(f"--resume found no valid checkpoint in {self.ckpt_dir} ({found}); pass --fresh "
                               "instead of --resume to start from step 0 (they are moved aside, not deleted)")
        if ckpt is None:
            self.log(f"no checkpoint in {self.ckpt_dir} yet; starting from step 0")
            return False
        if self.is_main:
            for path, _ in skipped:
                self.log(f"moved corrupt checkpoint {path.name} aside to {set_aside(path, '.corrupt').name}")
        try:
            self._restore(ckpt)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise LmforgeError(f"checkpoint {ckpt.path} verified but cannot be restored (hand-edited?): "
                               f"{type(err).__name__}: {err}") from None
        self.log(f"resumed from {ckpt.path} (step {self.step}, {self.tokens_seen:,} {self.objective.unit})")
        return True

    def _restore(self, ckpt) -> None:
        s = ckpt.state
        p = self.parallel
        if ckpt.layout == "dcp":  # sharded by a distributed run: DCP reshards to this run's ranks (or one process)
            from lmforge.train.sharded_checkpoint import load_sharded

            p.reshard(self.model)
            load_sharded(ckpt.path, self.model, self.optimizer)
        else:
            if p.mode == "fsdp":
                p.load_model_state(self.model, ckpt.tensors["model"])
            else:
                st.load_model_tensors(self.model, ckpt.tensors["model"])
            if self.masters is not None:
                self.masters.load_(ckpt.tensors["model"])
            st.optimizer_from_tensors(self.optimizer, ckpt.tensors["optimizer"], s["optimizer"],
                                      load=lambda sd: p.load_optimizer_state(self.model, self.optimizer, sd))
        if self.train_loader is not None:  # a rollout objective has none: its data is a function of the step
            self.train_loader.load_state_dict(st.loader_state_for(s["loader"], self.train_loader))
        if self.objective.load_state_dict is not None:
            self.objective.load_state_dict(s["objective"])
        if self.scaler is not None and s.get("scaler"):
            self.scaler.load_state_dict(s["scaler"])
        st.set_rng_state(ckpt.tensors["rng"], s["rng"])
        self.step, self.tokens_seen, self.elapsed = s["step"], s["tokens_seen"], s["elapsed_s"]
        self.nonfinite_in_row, self.nonfinite_total = s["nonfinite_in_row"], s["nonfinite_total"]
        self.overflow_total = s.get("overflow_total", 0)  # fp16 loss-scaler skips (absent in older checkpoints)
        self.last_val = s["last_val"]

    def start_fresh(self) -> None:
        """Step 0 in this run directory: refused over existing checkpoints unless TrainConfig.fresh, which moves
        them aside to checkpoints.old (nothing is deleted)."""
        if not check_fresh_start(self.run_dir, self.cfg.fresh):
            return
        if self.is_main:
            self.log(f"starting from step 0: moved the old checkpoints to {set_aside(self.ckpt_dir, '.old')}")


def check_fresh_start(run_dir: str | Path, fresh: bool) -> bool:
    """Whether run_dir holds checkpoints a run starting from step 0 would move aside; refused unless `fresh`.
    Commands with a long setup (reference log-probs) call it first, so the mistake costs nothing."""
    if not list_checkpoints(Path(run_dir) / "checkpoints"):
        return False
    if not fresh:
        raise LmforgeError(f"{run_dir} already holds checkpoints; pass --resume to continue that run, "
                           f"--fresh to start over (they are moved aside), or choose another --out")
    return True
