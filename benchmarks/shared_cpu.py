"""Decode speed when the CPU is shared: OpenMP's default spin-waiting vs the passive wait policy the CLI sets.

Each figure is a fresh worker process (the wait policy is read when torch loads) that greedily decodes with the
generation loop of `lmforge generate` / `chat` (prepared model, C++ kernels), best of --repeat runs: a tiny random
model and SmolLM2-135M (fp32), each idle and with a background load that this script starts and stops itself
(--load busy-loop processes, by default one per core). Settings: "old" (no wait variables: libgomp spins), "new"
(lmforge.common.threads.shared_cpu_env: OMP_WAIT_POLICY=PASSIVE) and "one_thread" (old policy, --threads 1).
Prints one JSON line: tokens/s per model / setting / condition, loaded/idle ratios and new/old ratios.
Usage: python benchmarks/shared_cpu.py [--tokens 64] [--smol-tokens 16] [--repeat 3] [--load 2]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from lmforge.common.threads import WAIT_VARS, shared_cpu_env

BUSY_LOOP = "while True: pass"
PROMPT = "Once upon a time, in a small village by the sea, there lived"


def worker(model_name: str, tokens: int, repeat: int, threads: int | None) -> dict:
    """Runs in the measured process: best tokens/s of `repeat` greedy decodes of `tokens` new tokens."""
    import torch

    from lmforge.common.threads import set_threads
    from lmforge.engine.generate import generate_stream
    from lmforge.engine.sampling_params import SamplingParams
    from lmforge.model import Transformer, get_preset
    from lmforge.model.inference import prepare_for_inference

    set_threads(threads)
    if model_name == "tiny":
        torch.manual_seed(0)
        model, prompt = Transformer(get_preset("tiny-llama", vocab_size=320)).eval(), list(range(3, 19))
    else:
        from lmforge import load

        lm = load(model_name)
        model, prompt = lm.model, lm.tokenizer.encode(PROMPT)
    prepare_for_inference(model)
    params = SamplingParams(temperature=0, max_new_tokens=tokens)

    def run() -> float:
        start = time.perf_counter()
        n = sum(1 for _ in generate_stream(model, [prompt], params))
        return n / (time.perf_counter() - start)

    with torch.inference_mode():
        run()  # warm-up: first calls of the kernels are slow
        best = max(run() for _ in range(repeat))
    return {"tok_s": round(best, 2), "threads": torch.get_num_threads()}


def measure(model_name: str, setting: str, loaded: bool, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARS}
    threads = None
    if setting == "new":
        env.update(shared_cpu_env(env))
    elif setting == "one_thread":
        threads = 1
    tokens = args.tokens if model_name == "tiny" else args.smol_tokens
    cmd = [sys.executable, __file__, "--worker", model_name, "--tokens", str(tokens), "--repeat", str(args.repeat)]
    if threads:
        cmd += ["--threads", str(threads)]
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.load if loaded else 0)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=args.timeout)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per run, tiny model")
    parser.add_argument("--smol-tokens", type=int, default=16, help="new tokens per run, SmolLM2")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (best is reported)")
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2, help="busy-loop processes when loaded")
    parser.add_argument("--models", default="tiny,smollm2-135m")
    parser.add_argument("--settings", default="old,new,one_thread")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per worker")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.tokens, args.repeat, args.threads)))
        return
    settings = args.settings.split(",")
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "background_processes": args.load, "repeat": args.repeat,
              "tok_s": {}, "loaded_over_idle": {}, "new_over_old": {}}
    for model_name in args.models.split(","):
        figures = {s: {c: measure(model_name, s, c == "loaded", args)["tok_s"] for c in ("idle", "loaded")}
                   for s in settings}
        result["tok_s"][model_name] = figures
        result["loaded_over_idle"][model_name] = {s: round(f["loaded"] / f["idle"], 3) for s, f in figures.items()}
        if "old" in figures and "new" in figures:
            result["new_over_old"][model_name] = {c: round(figures["new"][c] / figures["old"][c], 3)
                                                  for c in ("idle", "loaded")}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
