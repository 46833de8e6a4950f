"""`lmforge scaling`: a CPU-sized scaling-law sweep. Tiny models x token budgets are pretrained on the embedded
corpus with the pretrain pipeline (one tokenizer and packed data shared by all runs), then
L(N, D) = E + A/N^alpha + B/D^beta is fitted (Chinchilla approach 3, scaling_law.py) and the compute-optimal
frontier under C = 6 N D is derived. N counts non-embedding parameters (Kaplan et al. 2020), as fits best at tiny sizes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lmforge.common.errors import ConfigError
from lmforge.model import get_preset
from lmforge.train.config import TrainConfig
from lmforge.train.corpus_data import prepare_data
from lmforge.train.pretrain import pretrain
from lmforge.train.scaling_law import ScalingLaw, fit_scaling_law


@dataclass(frozen=True)
class ScalingConfig:
    out: str = "runs/scaling"
    sizes: tuple[tuple[int, int], ...] = ((32, 1), (48, 2), (64, 2), (96, 3))  # (dim, n_layers) per model
    steps: tuple[int, ...] = (40, 80, 160)  # token budgets D = steps x batch_size x seq_len
    batch_size: int = 8
    seq_len: int = 64
    lr: float = 3e-3
    corpus_documents: int = 3000
    vocab_size: int = 512
    eval_batches: int = 16
    seed: int = 0
    threads: int | None = 1  # one thread: on a shared or small CPU, more threads spin-wait on tiny matmuls
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(tuple(s) for s in self.sizes))
        object.__setattr__(self, "steps", tuple(self.steps))
        if len(self.sizes) * len(self.steps) < 5:
            raise ConfigError(f"ScalingConfig needs at least 5 runs (sizes x steps) to fit 5 parameters, got "
                              f"{len(self.sizes)} x {len(self.steps)}")
        for dim, layers in self.sizes:
            if dim < 16 or dim % 16 or layers < 1:
                raise ConfigError(f"ScalingConfig.sizes: (dim, n_layers) needs dim a multiple of 16 and n_layers "
                                  f">= 1, got ({dim}, {layers})")
        if any(s < 1 for s in self.steps) or self.batch_size < 1 or self.seq_len < 2 or self.lr <= 0:
            raise ConfigError("ScalingConfig.steps, batch_size must be >= 1, seq_len >= 2 and lr > 0")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


def size_config(dim: int, n_layers: int, vocab_size: int):
    """A llama-shaped model: head_dim 16, 2 KV heads where possible, SwiGLU width 3 * dim."""
    heads = max(dim // 16, 1)
    kv = 2 if heads % 2 == 0 else 1
    return get_preset("pretrain-1m", dim=dim, n_layers=n_layers, n_heads=heads, n_kv_heads=kv, ffn_dim=3 * dim,
                      vocab_size=vocab_size)


def non_embedding_params(mcfg) -> int:
    return mcfg.num_params() - mcfg.vocab_size * mcfg.dim * (1 if mcfg.tie_embeddings else 2)


def run_sweep(cfg: ScalingConfig, log=print) -> list[dict]:
    """Train every (size, budget) pair (runs already finished with the same settings are reused)."""
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    base = TrainConfig.from_dict(dict(out=str(root), corpus_documents=cfg.corpus_documents, vocab_size=cfg.vocab_size,
                                      seq_len=cfg.seq_len, val_fraction=0.05, seed=cfg.seed, threads=cfg.threads,
                                      device=cfg.device))
    _, tokenizer, _ = prepare_data(base, root, log)
    runs, total, t_start = [], len(cfg.sizes) * len(cfg.steps), time.perf_counter()
    for dim, layers in cfg.sizes:
        mcfg = size_config(dim, layers, len(tokenizer))
        model_path = root / f"model_d{dim}_l{layers}.json"
        mcfg.save(model_path)
        for steps in cfg.steps:
            run_dir = root / "runs" / f"d{dim}_l{layers}_s{steps}"
            tcfg = base.replace(out=str(run_dir), model_config=str(model_path), data_dir=str(root / "data"),
                           tokenizer_dir=str(root / "tokenizer"), batch_size=cfg.batch_size, max_steps=steps,
                           lr=cfg.lr, warmup_steps=max(steps // 10, 1), eval_every=steps,
                           eval_batches=cfg.eval_batches, log_every=max(steps // 5, 1), checkpoint_every=steps,
                           keep_checkpoints=1, sample_prompts=(), progress=False, peak_tflops=1.0,
                           export_hf=False, resume=True)
            t0 = time.perf_counter()
            summary = _reuse(run_dir, tcfg) or pretrain(tcfg, log=lambda _msg: None)
            run = {"dim": dim, "n_layers": layers, "steps": steps, "params": non_embedding_params(mcfg),
                   "params_total": mcfg.num_params(), "tokens": steps * cfg.tokens_per_step,
                   "val_loss": summary["val_loss"], "seconds": round(time.perf_counter() - t0, 2)}
            runs.append(run)
            done = len(runs)
            eta = (time.perf_counter() - t_start) / done * (total - done)
            log(f"[{done}/{total}] N={run['params']:,} D={run['tokens']:,}: val loss {run['val_loss']:.4f} "
                f"({run['seconds']:.1f} s; ETA {eta:.0f} s)")
    return runs


def _reuse(run_dir: Path, tcfg: TrainConfig) -> dict | None:
    summary, saved = run_dir / "summary.json", run_dir / "train_config.json"
    if not (summary.is_file() and saved.is_file()):
        return None
    if json.loads(saved.read_text()) != json.loads(json.dumps(tcfg.to_dict())):
        return None
    data = json.loads(summary.read_text())
    return data if data.get("status") == "finished" and data.get("val_loss") is not None else None


def frontier(law: ScalingLaw, flops_min: float, flops_max: float, points: int = 9) -> list[dict]:
    return [law.compute_optimal(float(c)) for c in np.geomspace(flops_min, flops_max, points)]


def scaling(cfg: ScalingConfig, log=print) -> dict:
    """The sweep, the fit, the compute-optimal frontier; writes OUT/scaling.json and OUT/scaling.png."""
    from lmforge.train.scaling_plot import plot_scaling  # matplotlib only when plotting

    runs = run_sweep(cfg, log)
    n, d, loss = (np.array([r[k] for r in runs], dtype=float) for k in ("params", "tokens", "val_loss"))
    law = fit_scaling_law(n, d, loss)
    flops = 6 * n * d
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    result = {"config": asdict(cfg), "runs": runs, "fit": law.to_dict(),
              "fit_rmse_log_loss": float(np.sqrt(np.mean((np.log(law.loss(n, d)) - np.log(loss)) ** 2))),
              "G": g, "n_opt_exponent": law.beta / (law.alpha + law.beta),
              "d_opt_exponent": law.alpha / (law.alpha + law.beta),
              "frontier": frontier(law, flops.min(), flops.max() * 100)}
    root = Path(cfg.out)
    (root / "scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_scaling(result, law, root / "scaling.png")
    result["png"] = str(root / "scaling.png")
    return result
