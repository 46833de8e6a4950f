"""`lmforge speedrun`: the whole life of a small model in one command, after nanochat's speedrun — a byte-level BPE
and the packed embedded corpus, pretraining, SFT on the embedded instruction task, DPO on the embedded preference
pairs, the same task set scored on every stage, and one report card (report.md + PNGs).

Every stage works in its own subdirectory and writes stage.json when it is done; a rerun with the same --out skips
finished stages and resumes an interrupted training stage from its last checkpoint (the Trainer stops cleanly on
Ctrl-C), so an interruption loses at most the unfinished part of one stage.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.eval.speedrun_budget import make_plan
from lmforge.eval.speedrun_config import STAGES, SpeedrunConfig, stage_dir
from lmforge.eval.speedrun_report import write_report
from lmforge.eval.speedrun_scores import stage_scores, unigram_scores
from lmforge.eval.task_files import check_items, resolve_tasks

MODEL_STAGES = ("pretrain", "sft", "dpo")  # the stages whose model the eval stage scores
STAGE_FILE = "stage.json"
PLAN_FILE = "plan.json"


class SpeedrunInterrupted(Exception):
    """A training stage stopped on a signal; its checkpoint is saved and a rerun resumes it."""


def _write_json(path: Path, data: dict) -> None:
    """Written whole or not at all (a temporary file renamed over the target)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_stage(out: Path, stage: str) -> dict | None:
    path = stage_dir(out, stage) / STAGE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


class Speedrun:
    def __init__(self, cfg: SpeedrunConfig, log: Callable[[str], None] = print) -> None:
        self.cfg, self.log, self.out = cfg, log, Path(cfg.out)
        self.sizes = cfg.sizes()
        self.plan: dict | None = None

    def dir(self, stage: str) -> Path:
        return stage_dir(self.out, stage)

    @property
    def data_dir(self) -> Path:
        return self.dir("tokenizer") / "data"

    def _check_same_run(self) -> None:
        """A rerun must have the settings of the run in --out (its checkpoints and finished stages depend on them)."""
        path = self.out / PLAN_FILE
        if not path.is_file():
            return
        saved = json.loads(path.read_text())
        mine = json.loads(json.dumps({"recipe": self.cfg.recipe_name, "seed": self.cfg.seed, "sizes": self.sizes}))
        diff = [f"{k}={saved['sizes'].get(k)!r} there, {v!r} now" for k, v in mine["sizes"].items()
                if saved["sizes"].get(k) != v]
        diff += [f"{k}={saved[k]!r} there, {mine[k]!r} now" for k in ("recipe", "seed") if saved.get(k) != mine[k]]
        if diff:
            raise LmforgeError(f"{self.out} holds a speedrun with other settings ({'; '.join(diff)}); rerun with "
                               f"the same settings to resume it, or choose another --out")
        self.plan = saved

    def run(self) -> dict:
        for task in resolve_tasks(list(self.sizes["tasks"]), []) if self.sizes["tasks"] else ():
            check_items(task)  # a bad task file fails now, not after the training stages
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_same_run()
        started = time.perf_counter()
        for i, stage in enumerate(STAGES, 1):
            tag = f"[{i}/{len(STAGES)}] {stage}"
            done = read_stage(self.out, stage)
            if done is not None:
                self.log(f"{tag}: done in an earlier run ({done['seconds']:.0f} s); skipped")
                continue
            self.log(f"{tag}: {DESCRIPTIONS[stage]}")
            self.dir(stage).mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            record = getattr(self, f"_{stage}")()
            record.update(stage=stage, seconds=time.perf_counter() - t0)
            _write_json(self.dir(stage) / STAGE_FILE, record)
            self.log(f"{tag}: {record['line']} ({record['seconds']:.0f} s)")
        return {"report": str(self.out / "report.md"), "seconds": time.perf_counter() - started}

    # ---- the stages: each returns its stage record (a one-line summary in "line") ----

    def _tokenizer(self) -> dict:
        from lmforge.train.config import TrainConfig
        from lmforge.train.corpus_data import prepare_data

        s = self.sizes
        cfg = TrainConfig.from_dict({"out": str(self.dir("tokenizer")), "corpus_documents": s["corpus_documents"],
                                     "corpus_seed": self.cfg.seed, "vocab_size": s["vocab_size"],
                                     "seq_len": s["seq_len"], "val_fraction": s["val_fraction"]})
        _, tokenizer, stats = prepare_data(cfg, self.dir("tokenizer"), self.log)
        baseline = unigram_scores(tokenizer, self.data_dir)
        return {"vocab_size": len(tokenizer), "bytes_per_token": stats["bytes_per_token"],
                "train_tokens": stats["train_tokens"], "val_tokens": stats["val_tokens"], "baseline": baseline,
                "line": f"{len(tokenizer):,}-token BPE, {stats['bytes_per_token']:.2f} bytes/token; "
                        f"{stats['train_tokens']:,} train / {stats['val_tokens']:,} held-out tokens; unigram baseline "
                        f"{baseline['bpb']:.3f} bits/byte"}

    def _steps(self) -> dict:
        """The training steps of each stage: the recipe's, fitted to --minutes once (plan.json; reruns reuse it)."""
        if self.plan is None:
            spent = sum((read_stage(self.out, s) or {}).get("seconds", 0.0) for s in STAGES)
            self.plan = make_plan(self.cfg, self.sizes, len(self._tokenizer_obj()), self.cfg.minutes * 60 - spent,
                                  self.log)
            _write_json(self.out / PLAN_FILE, self.plan)
        return self.plan["steps"]

    def _tokenizer_obj(self):
        from lmforge.tokenizer import Tokenizer

        return Tokenizer.from_dir(self.dir("tokenizer") / "tokenizer")

    def _pretrain(self) -> dict:
        from lmforge.train.config import TrainConfig
        from lmforge.train.pretrain import pretrain

        s, steps = self.sizes, self._steps()["pretrain"]
        cfg = TrainConfig.from_dict({
            "out": str(self.dir("pretrain")), "seed": self.cfg.seed, "threads": self.cfg.threads, "resume": True,
            "device": self.cfg.device,
            "precision": "fp32", "preset": s["preset"], "data_dir": str(self.data_dir),
            "tokenizer_dir": str(self.dir("tokenizer") / "tokenizer"), "seq_len": s["seq_len"],
            "batch_size": s["batch_size"], "max_steps": steps, "lr": s["pretrain_lr"],
            "warmup_steps": min(20, steps // 10), **_cadence(steps), "sample_every": steps})
        summary = pretrain(cfg, log=self.log)
        _check_finished(summary, "pretrain")
        return {"steps": summary["step"], "tokens": summary["tokens"], "val_loss": summary["val_loss"],
                "params": summary["params"],
                "line": f"{summary['params'] / 1e6:.2f}M parameters, {summary['step']} steps, "
                        f"{summary['tokens']:,} tokens; held-out loss {summary['val_loss']:.3f} nats/token"}

    def _sft(self) -> dict:
        from lmforge.train.post.sft import sft
        from lmforge.train.post.sft_config import SFTConfig

        s, steps = self.sizes, self._steps()["sft"]
        cfg = SFTConfig.from_dict({
            "model": str(self.dir("pretrain") / "hf"), "out": str(self.dir("sft")), "seed": self.cfg.seed,
            "threads": self.cfg.threads, "device": self.cfg.device, "resume": True, "precision": "fp32",
            "eval_examples": min(s["eval_examples"], 20), "seq_len": s["seq_len"], "train_examples": s["sft_examples"],
            "task_seed": self.cfg.seed, "lr": s["sft_lr"], "max_steps": steps, "warmup_steps": min(10, steps // 10),
            "batch_size": s["batch_size"], **_cadence(steps)})
        summary = sft(cfg, log=self.log)
        _check_finished(summary, "sft")
        return {"steps": summary["step"], "val_loss": summary["val_loss"],
                "exact_match_before": summary["exact_match_before"], "exact_match_after": summary["exact_match_after"],
                "line": f"{summary['step']} steps; held-out exact match {summary['exact_match_before']:.2f} -> "
                        f"{summary['exact_match_after']:.2f} ({summary['eval_examples']} conversations)"}

    def _dpo(self) -> dict:
        from lmforge.train.post.dpo import train_dpo
        from lmforge.train.post.pair_config import DPOConfig

        s, steps = self.sizes, self._steps()["dpo"]
        cfg = DPOConfig.from_dict({
            "model": str(self.dir("sft") / "hf"), "out": str(self.dir("dpo")), "seed": self.cfg.seed,
            "threads": self.cfg.threads, "device": self.cfg.device, "resume": True, "train_pairs": s["train_pairs"],
            "heldout_pairs": s["heldout_pairs"], "task_seed": self.cfg.seed, "lr": s["dpo_lr"],
            "beta": s["dpo_beta"], "max_steps": steps, "warmup_steps": min(10, steps // 10),
            "batch_size": s["batch_size"], **_cadence(steps), "eval_every": max(steps // 3, 1), "log_every": 1})
        summary = train_dpo(cfg, log=self.log)
        _check_finished(summary, "dpo")
        return {"steps": summary["steps"], "win_rate_reference": summary["win_rate_reference"],
                "win_rate_policy": summary["win_rate_policy"],
                "line": f"{summary['steps']} steps; held-out win rate {summary['win_rate_reference']:.2f} -> "
                        f"{summary['win_rate_policy']:.2f} ({summary['heldout_pairs']} pairs)"}

    def _eval(self) -> dict:
        """The task set on each stage's model; each model's scores are kept as soon as they are measured."""
        scores = {}
        for stage in MODEL_STAGES:
            path = self.dir("eval") / f"{stage}.json"
            if path.is_file():
                scores[stage] = json.loads(path.read_text())
                continue
            t0 = time.perf_counter()
            scores[stage] = stage_scores(self.dir(stage) / "hf", self.data_dir, self.sizes, self.cfg.seed,
                                         self.dir("eval") / f"tasks-{stage}", self.cfg.device)
            _write_json(path, scores[stage])
            self.log(f"  {stage}: {_score_line(scores[stage])} ({time.perf_counter() - t0:.0f} s)")
        return {"scores": scores, "line": "; ".join(f"{s}: {_score_line(v)}" for s, v in scores.items())}

    def _report(self) -> dict:
        stages = {s: read_stage(self.out, s) for s in STAGES[:-1]}
        path, pngs = write_report(self.out, stages, self.plan, self.sizes)
        return {"report": str(path), "pngs": [str(p) for p in pngs], "line": f"wrote {path} and {len(pngs)} PNGs"}


DESCRIPTIONS = {
    "tokenizer": "train a byte-level BPE on the embedded corpus and pack it into token shards",
    "pretrain": "pretrain the model on the packed corpus",
    "sft": "supervised fine-tuning on the embedded instruction task (loss on the answers)",
    "dpo": "DPO on the embedded preference pairs (the SFT model is the reference)",
    "eval": "score the same task set on each stage's model",
    "report": "write the report card",
}


def _cadence(steps: int) -> dict:
    """Held-out evaluations and checkpoints about six times a run; a train record at most every 5 steps."""
    return {"eval_every": max(steps // 6, 1), "checkpoint_every": max(steps // 6, 1), "log_every": min(5, steps)}


def _check_finished(summary: dict, stage: str) -> None:
    if summary.get("status", "finished") != "finished":
        raise SpeedrunInterrupted(f"{stage} stopped at step {summary.get('step')} (checkpoint saved); rerun the same "
                                  f"command to resume it")


def _score_line(scores: dict) -> str:
    parts = [f"{scores['corpus']['bpb']:.3f} bits/byte", f"instruct EM {scores['instruct']['exact_match']:.2f}",
             f"preference acc {scores['preference']['accuracy']:.2f}"]
    parts += [f"{name} {value:.2f}" for name, value in scores.get("tasks", {}).items()]
    return ", ".join(parts)
