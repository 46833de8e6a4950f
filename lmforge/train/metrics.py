"""Training metrics: a JSONL log (one record per line, truncated on resume so steps never repeat), optional
TensorBoard scalars, and model FLOPs utilisation (MFU, PaLM appendix B: 6N + 12·L·d·T FLOPs per token).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

from lmforge.model.config import ModelConfig


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 per matmul parameter (forward + backward) plus the attention scores and
    values, 12 · layers · (heads · head_dim) · seq_len. Embedding lookups are not matmuls; a tied lm_head is."""
    n = cfg.num_params() - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.dim)
    return 6 * n + 12 * cfg.n_layers * cfg.n_heads * cfg.resolved_head_dim * seq_len


def measure_peak_flops(device: torch.device, dtype: torch.dtype, size: int = 1024, reps: int = 8) -> float:
    """Achieved FLOP/s of a square matmul in `dtype`: a measured stand-in for the hardware peak.

    The operands come from a private generator: the global RNG streams (saved in checkpoints) are left untouched,
    so a resumed run's RNG state equals an uninterrupted run's."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * reps / (time.perf_counter() - start)


def memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated, or the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a JSONL log that carry an integer step; other lines (a line cut short by a killed run, a
    hand edit) are left out rather than ending the run or its report."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and type(record.get("step")) is int:
            records.append(record)
    return records


class MetricsLogger:
    """Appends records to run_dir/metrics.jsonl; `truncate_after(step)` drops records of later steps (the part
    of the log a resumed run will redo). TensorBoard scalars go to run_dir/tb when enabled and installed."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = False, log=print) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError:
                log("tensorboard is not installed (pip install tensorboard); writing metrics.jsonl only")
        self._file = self.path.open("a")

    def truncate_after(self, step: int) -> None:
        kept = [r for r in read_metrics(self.path) if r["step"] <= step]
        self._file.close()
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.path.open("a")

    def log(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
