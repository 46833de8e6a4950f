"""Log-likelihood requests per second: lm-eval's `--model lmforge` vs `--model hf` (transformers) on the same task's
requests, same weights (float32), same process. lmforge runs each distinct context once (a multiple-choice item's k
choices share it) in token-budgeted batches; hf runs one forward per request at lm-eval's default batch size 1, and
again at --hf-batch. Also reports the largest per-request log-likelihood difference between the two.
Prints one JSON line. Usage: python benchmarks/eval_throughput.py [--task lmforge_mc] [--num-fewshot 5] [--limit 40]
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def task_requests(task: str, num_fewshot: int, limit: int):
    """lm-eval's Instance objects for `task` (loglikelihood requests of a multiple-choice task)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from lmforge.eval.task_files import TASKS_DIR

    tasks = get_task_dict([task], TaskManager(include_path=str(TASKS_DIR), include_defaults=False))
    obj = tasks[task]
    obj.set_config(key="num_fewshot", value=num_fewshot)
    obj.build_all_requests(limit=limit, rank=0, world_size=1)
    return obj.instances


def timed(lm, requests) -> tuple[float, list[float]]:
    start = time.perf_counter()
    out = lm.loglikelihood(requests, disable_tqdm=True)
    return time.perf_counter() - start, [float(ll) for ll, _ in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="lmforge model (converted to an HF dir for hf)")
    parser.add_argument("--task", default="lmforge_mc")
    parser.add_argument("--num-fewshot", type=int, default=5)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--hf-batch", type=int, default=16, help="hf's second run: this batch size")
    args = parser.parse_args()

    from lm_eval.models.huggingface import HFLM

    from lmforge.eval.lm_adapter import LmforgeLM
    from lmforge.formats.loader import load

    requests = task_requests(args.task, args.num_fewshot, args.limit)
    with tempfile.TemporaryDirectory() as hf_dir:
        load(args.model).save(hf_dir)
        ours = LmforgeLM(pretrained=hf_dir)
        hf1 = HFLM(pretrained=hf_dir, dtype="float32", device="cpu", batch_size=1)
        timed(ours, requests[:8])  # warm-up: kernels, allocator
        timed(hf1, requests[:8])
        t_ours, ll_ours = timed(ours, requests)
        t_hf1, ll_hf = timed(hf1, requests)
        hf1.batch_size_per_gpu = args.hf_batch  # the same model object on lm-eval's batched path
        t_hfb, _ = timed(hf1, requests)
    n = len(requests)
    print(json.dumps({
        "task": args.task, "num_fewshot": args.num_fewshot, "requests": n,
        "distinct_contexts": len({r.args[0] for r in requests}),
        "lmforge_requests_per_s": round(n / t_ours, 2), "hf_requests_per_s": round(n / t_hf1, 2),
        f"hf_batch{args.hf_batch}_requests_per_s": round(n / t_hfb, 2),
        "ratio_vs_hf": round(t_hf1 / t_ours, 2), f"ratio_vs_hf_batch{args.hf_batch}": round(t_hfb / t_ours, 2),
        "max_abs_loglikelihood_diff": max(abs(a - b) for a, b in zip(ll_ours, ll_hf, strict=True)),
        "threads": __import__("torch").get_num_threads()}))


if __name__ == "__main__":
    main()
