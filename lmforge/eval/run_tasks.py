"""`lmforge eval MODEL --tasks ...`: lm-evaluation-harness tasks from local YAML + data files on an lmforge model
(`--model lmforge`), results as JSON and a markdown table.

Task files are checked first (lmforge.eval.task_files), so a missing file, broken YAML or an item without its answer
field is a one-line error before the model loads. Datasets are read offline (HF_DATASETS_OFFLINE=1).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.eval.task_files import check_items, resolve_tasks


def _check_counts(num_fewshot: int | None, limit: float | None) -> None:
    if num_fewshot is not None and num_fewshot < 0:
        raise LmforgeError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    if limit is not None and limit <= 0:
        raise LmforgeError(f"--limit must be > 0 (items per task, or a fraction below 1), got {limit}")


def markdown_table(results: dict) -> str:
    """| task | filter | n-shot | metric | value | stderr | items |, one row per metric of each task."""
    lines = ["| task | filter | n-shot | metric | value | stderr | items |", "|---|---|---|---|---|---|---|"]
    for task, metrics in results["results"].items():
        shots = results.get("n-shot", {}).get(task, "")
        items = results.get("n-samples", {}).get(task, {}).get("effective", "")
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key or not isinstance(value, int | float):
                continue
            metric, filt = key.split(",", 1)
            err = metrics.get(f"{metric}_stderr,{filt}")
            err = f"{err:.4f}" if isinstance(err, int | float) else ""
            lines.append(f"| {task} | {filt} | {shots} | {metric} | {value:.4f} | {err} | {items} |")
    return "\n".join(lines) + "\n"


def run_tasks(model: str, specs: list[str], *, include: list[Path] = (), num_fewshot: int | None = None,
              limit: float | None = None, chat_template: bool = False, out: Path | None = None,
              log_samples: bool = False, model_args: dict | None = None, lm=None, log=print) -> dict:
    """Evaluate MODEL (or an lm-eval LM object `lm`) on the tasks; returns lm-eval's results dict (without samples
    unless log_samples) and writes results.json + results.md (+ samples_<task>.jsonl) under `out`."""
    _check_counts(num_fewshot, limit)
    tasks = resolve_tasks(specs, [Path(p) for p in include])
    for task in tasks:
        check_items(task)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise LmforgeError("lmforge eval --tasks needs lm-evaluation-harness: pip install 'lmforge[eval]' "
                           "(or pip install lm-eval)") from None
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    from lmforge.eval.lm_adapter import LmforgeLM

    dirs = sorted({str(t.path.parent) for t in tasks})
    manager = TaskManager(include_path=dirs, include_defaults=False)
    if lm is None:
        lm = LmforgeLM(pretrained=model, **(model_args or {}))
    start = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=[t.name for t in tasks], num_fewshot=num_fewshot, limit=limit,
                              task_manager=manager, apply_chat_template=chat_template,
                              fewshot_as_multiturn=chat_template, log_samples=log_samples, bootstrap_iters=1000,
                              random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    elapsed = time.perf_counter() - start
    samples = results.pop("samples", None) if results else None
    if not results:
        raise LmforgeError("lm-eval returned no results")
    summary = {"model": model, "tasks": {t.name: str(t.path) for t in tasks}, "num_fewshot": num_fewshot,
               "limit": limit, "chat_template": chat_template, "elapsed_s": round(elapsed, 2),
               "results": results["results"], "n-shot": results.get("n-shot", {}),
               "n-samples": results.get("n-samples", {}), "versions": results.get("versions", {}),
               "configs": results.get("configs", {})}
    table = markdown_table(summary)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(summary, indent=2, default=handle_non_serializable,
                                                     ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "results.md").write_text(f"# lmforge eval: {model}\n\n{table}", encoding="utf-8")
        for task, rows in (samples or {}).items():
            with open(out / f"samples_{task}.jsonl", "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, default=handle_non_serializable, ensure_ascii=False) + "\n")
    log(table)
    if samples is not None:
        summary["samples"] = samples
    return summary
