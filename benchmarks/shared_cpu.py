"""Decode speed when the CPU is shared: lmforge's thread governor vs fixed thread counts and wait policies.

Each figure is a fresh worker process (the wait policy is read when torch loads) that greedily decodes with the
generation loop of `lmforge generate` / `chat` (prepared model, C++ kernels): the best of --repeat runs after at
least --warmup seconds of decoding (the governor's first reading comes after 0.25 s), and the best of --rounds such
processes, the settings taking turns. Models: a tiny random one and SmolLM2-135M (fp32), each idle and with a
background load that this script starts and stops itself (--load busy-loop processes, by default one per core).
Settings: "adaptive" (lmforge's default: OpenMP's spinning threads, fewer while other processes use the CPU), "spin"
(the same, pinned to torch's default count: lmforge before either fix), "passive" (OMP_WAIT_POLICY=PASSIVE, default
count: lmforge's previous default) and "one_thread" (spinning, --threads 1).
Prints one JSON line: tokens/s and threads at the end per model / setting / condition, loaded/idle ratios, and the
adaptive setting's ratio to each other one.
--interleaved N instead measures the idle cost of governing in one process: N times the governed and the pinned
(torch's default count) setting in turn, best and median tokens/s of each (separate processes on a shared machine
see different backgrounds; alternating in one process shares it).
Usage: python benchmarks/shared_cpu.py [--tokens 64] [--smol-tokens 16] [--repeat 3] [--rounds 1] [--load 2]
       python benchmarks/shared_cpu.py --interleaved 8 [--smol-tokens 32]
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time

from lmforge.common.threads import ENV, WAIT_VARS

BUSY_LOOP = "while True: pass"
PROMPT = "Once upon a time, in a small village by the sea, there lived"


SETTINGS = {  # name: (extra environment, --threads: None governs, 0 pins torch's default count)
    "adaptive": ({}, None),
    "spin": ({}, 0),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, 0),
    "one_thread": ({}, 1),
}


def load_model(model_name: str):
    """The prepared model and a prompt: a tiny random Llama or a named model (SmolLM2)."""
    import torch

    from lmforge.model import Transformer, get_preset
    from lmforge.model.inference import prepare_for_inference

    if model_name == "tiny":
        torch.manual_seed(0)
        model, prompt = Transformer(get_preset("tiny-llama", vocab_size=320)).eval(), list(range(3, 19))
    else:
        from lmforge import load

        lm = load(model_name)
        model, prompt = lm.model, lm.tokenizer.encode(PROMPT)
    prepare_for_inference(model)
    return model, prompt


def decode_tokens_per_s(model, prompt: list[int], tokens: int) -> float:
    """One greedy decode of `tokens` new tokens with the loop of `lmforge generate`, in tokens/s."""
    from lmforge.generation.generate import generate_stream
    from lmforge.generation.sampling_params import SamplingParams

    start = time.perf_counter()
    n = sum(1 for _ in generate_stream(model, [prompt], SamplingParams(temperature=0, max_new_tokens=tokens)))
    return n / (time.perf_counter() - start)


def worker(model_name: str, tokens: int, repeat: int, threads: int | None, warmup: float) -> dict:
    """Runs in the measured process: best tokens/s of `repeat` greedy decodes of `tokens` new tokens."""
    import torch

    from lmforge.common.threads import set_threads

    set_threads(torch.get_num_threads() if threads == 0 else threads)
    model, prompt = load_model(model_name)
    with torch.inference_mode():
        start = time.perf_counter()
        while time.perf_counter() - start < warmup:  # first calls of the kernels are slow; the governor's reading
            decode_tokens_per_s(model, prompt, tokens)
        best = max(decode_tokens_per_s(model, prompt, tokens) for _ in range(repeat))
    return {"tok_s": round(best, 2), "threads": torch.get_num_threads()}


def interleaved(model_name: str, tokens: int, pairs: int) -> dict:
    """Idle: governed vs pinned to torch's default thread count, alternating in this process."""
    import statistics

    import torch

    from lmforge.common import threads

    model, prompt = load_model(model_name)
    governor, default = threads.governor(), torch.get_num_threads()
    runs: dict = {"adaptive": [], "spin": []}
    adaptive_threads = []
    with torch.inference_mode():
        decode_tokens_per_s(model, prompt, tokens)  # warm-up
        for _ in range(pairs):
            governor.pin(default)
            runs["spin"].append(decode_tokens_per_s(model, prompt, tokens))
            governor.pinned = None  # governed again from the next step
            runs["adaptive"].append(decode_tokens_per_s(model, prompt, tokens))
            adaptive_threads.append(governor.current)
    return {"best": {k: round(max(v), 2) for k, v in runs.items()},
            "median": {k: round(statistics.median(v), 2) for k, v in runs.items()},
            "adaptive_threads": adaptive_threads}


def measure(model_name: str, setting: str, loaded: bool, args) -> dict:
    extra, threads = SETTINGS[setting]
    env = {**{k: v for k, v in os.environ.items() if k not in (*WAIT_VARS, ENV)}, **extra}
    tokens = args.tokens if model_name == "tiny" else args.smol_tokens
    cmd = [sys.executable, __file__, "--worker", model_name, "--tokens", str(tokens), "--repeat", str(args.repeat),
           "--warmup", str(args.warmup)]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.load if loaded else 0)]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=args.timeout)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_runs(model_name: str, settings: list[str], args) -> dict:
    """{setting: {condition: the fastest worker's result}} over --rounds rounds, the settings taking turns within a
    round, so that a shared machine's changing load falls on each of them alike."""
    runs: dict = {s: {} for s in settings}
    for condition in ("idle", "loaded"):
        for _ in range(args.rounds):
            for setting in settings:
                run = measure(model_name, setting, condition == "loaded", args)
                if condition not in runs[setting] or run["tok_s"] > runs[setting][condition]["tok_s"]:
                    runs[setting][condition] = run
    return runs


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
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--rounds", type=int, default=1, help="worker processes per figure, taking turns")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of decoding before the timed runs")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per worker")
    parser.add_argument("--interleaved", type=int, default=0,
                        help="pairs of governed / pinned runs in one process, idle (the idle cost of governing)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.tokens, args.repeat, args.threads, args.warmup)))
        return
    if args.interleaved:
        print(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "interleaved": {
            m: interleaved(m, args.tokens if m == "tiny" else args.smol_tokens, args.interleaved)
            for m in args.models.split(",")}}))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: the `finally` still stops the busy loops
    settings = args.settings.split(",")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "background_processes": args.load, "repeat": args.repeat,
              "tok_s": {}, "threads_at_end": {}, "loaded_over_idle": {}, "adaptive_over": {}}
    for model_name in args.models.split(","):
        runs = best_runs(model_name, settings, args)
        figures = {s: {c: run["tok_s"] for c, run in by.items()} for s, by in runs.items()}
        result["tok_s"][model_name] = figures
        result["threads_at_end"][model_name] = {s: {c: run["threads"] for c, run in by.items()}
                                                for s, by in runs.items()}
        result["loaded_over_idle"][model_name] = {s: round(f["loaded"] / f["idle"], 3) for s, f in figures.items()}
        if "adaptive" in figures:
            result["adaptive_over"][model_name] = {
                s: {c: round(figures["adaptive"][c] / figures[s][c], 3) for c in ("idle", "loaded")}
                for s in settings if s != "adaptive"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
