"""torch.compile'd decode step on a static-shape KV cache vs the eager paths (CPU, batch 1, greedy), one process.

Per model and dtype: the default path (prepare_for_inference + the growing KVCache, what `lmforge generate` runs),
the plain eager model on the same growing cache, the plain eager model on the static cache, and the compiled step
on the static cache (decode(compile=True); the projections stay torch's own: the C++ kernels have no fake tensor
implementations, so inductor could not trace them), with the compile time of its first call.
Prints one JSON line. Usage: python benchmarks/decode_compile.py [--tokens 64] [--repeat 3] [--models tiny,smollm2]
"""

import argparse
import copy
import json
import sys
import time

import torch

from lmforge import load
from lmforge.generation.generate import decode
from lmforge.generation.step import decode_step
from lmforge.model import Transformer, get_preset
from lmforge.model.inference import prepare_for_inference


def static_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding on a StaticKVCache, eager: what decode(compile=True) runs (the same loop and cache), with
    generation's decode_step not compiled."""
    return decode(model, prompt, max_new_tokens=max_new_tokens, compile=True,
                  step=lambda tokens, cache, mask: decode_step(model, tokens, cache, mask))


def tok_per_s(model, prompt: list[int], tokens: int, repeat: int, run=decode, **kwargs) -> tuple[float, list[int]]:
    """Best tokens per second of `repeat` runs: wall-clock, or CPU time of this process with --cpu-time (a shared
    machine: it does not count the time other processes hold the cores)."""
    run(model, prompt, max_new_tokens=8, **kwargs)  # warm-up (oneDNN first calls)
    seconds, out = float("inf"), None
    for _ in range(repeat):
        start = CLOCK[0]()
        out = run(model, prompt, max_new_tokens=tokens, **kwargs)
        seconds = min(seconds, CLOCK[0]() - start)
    return tokens / seconds, out


def measure(model, prompt: list[int], tokens: int, repeat: int) -> dict:
    model = model.eval()
    prepared = copy.deepcopy(model)
    prepare_for_inference(prepared)  # in place
    out = {}
    out["eager_default"], reference = tok_per_s(prepared, prompt, tokens, repeat)
    out["eager_plain"], _ = tok_per_s(model, prompt, tokens, repeat)
    out["eager_static"], _ = tok_per_s(model, prompt, tokens, repeat, run=static_greedy)
    start = CLOCK[0]()
    decode(model, prompt, max_new_tokens=tokens, compile=True)  # the first call compiles
    out["compile_s"] = CLOCK[0]() - start
    out["compiled_static"], compiled = tok_per_s(model, prompt, tokens, repeat, compile=True)
    out["same_tokens"] = compiled == reference
    out["ratio_compiled_vs_default"] = out["compiled_static"] / out["eager_default"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


CLOCK = [time.perf_counter]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per run")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is reported)")
    parser.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny (random tiny-llama), smollm2")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--cpu-time", action="store_true", help="time by this process's CPU time (loaded machines)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        CLOCK[0] = time.process_time
    results = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name not in args.dtypes.split(","):
            continue
        if "tiny" in args.models.split(","):
            torch.manual_seed(0)
            tiny = Transformer(get_preset("tiny-llama")).to(dtype)
            results[f"tiny-llama {name}"] = measure(tiny, list(range(1, 17)), args.tokens, args.repeat)
            print(f"tiny {name}: {results[f'tiny-llama {name}']}", file=sys.stderr, flush=True)
            torch._dynamo.reset()
        if "smollm2" in args.models.split(","):
            lm = load("smollm2-135m", dtype=dtype)
            prompt = lm.tokenizer.encode("The three primary colours are")
            results[f"smollm2-135m {name}"] = measure(lm.model, prompt, args.tokens, args.repeat)
            print(f"smollm2 {name}: {results[f'smollm2-135m {name}']}", file=sys.stderr, flush=True)
            torch._dynamo.reset()
    print(json.dumps({"benchmark": "decode_compile", "tokens": args.tokens, "threads": torch.get_num_threads(),
                      "clock": "process CPU time" if args.cpu_time else "wall",
                      "tok_per_s": results, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
