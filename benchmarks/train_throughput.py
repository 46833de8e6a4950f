"""Training throughput: lmforge's Transformer vs transformers' LlamaForCausalLM built from the same config
(random weights, offline), the same train step (forward, summed token cross-entropy, backward, AdamW), batch,
sequence length and precision, alternated in one process, best of --repeat. Also lmforge's MFU against a matmul
peak measured in the same run and dtype. Prints one JSON line. Usage: python benchmarks/train_throughput.py

--precision bf16: each library's own bf16 recipe, as its trainer runs it: lmforge's bf16 weights with fp32
masters in the optimizer and the chunked cross-entropy (the Trainer's path in one process); transformers' fp32
weights under torch.autocast (HF Trainer's bf16=True).

Both run in one process with the allocator setting lmforge's Trainer applies on CPU (common/allocator.py: freed
memory kept for reuse, no page faults on each step's fresh buffers); --default-allocator measures both with glibc's
defaults instead.
"""

import argparse
import contextlib
import json
import sys
import time

import torch

from lmforge.common.allocator import keep_freed_memory
from lmforge.common.hardware import cpu_has_native_bf16, slow_bf16_note
from lmforge.formats.hf import config_to_hf
from lmforge.model import Transformer, get_preset
from lmforge.train.master_weights import MasterWeights
from lmforge.train.metrics import flops_per_token, measure_peak_flops
from lmforge.train.optim import build_optimizer
from lmforge.train.step import accumulate_gradients, optimizer_step

CLOCK = time.perf_counter  # --clock process: CPU seconds of this process (robust on a CPU shared with other jobs)


def kernel_bound(forward, module, batch, autocast, cfg, clock) -> dict:
    """How far any library could get ahead of this one on the same ATen kernels: one of its steps against only its
    matmuls (the shapes its step records) and its attention forward + backward, replayed without the rest."""
    train_steps(forward, module, batch, 1, autocast)
    with torch.profiler.profile(record_shapes=True) as prof:  # steps + 1 = 2 optimizer steps
        train_steps(forward, module, batch, 1, autocast)
    mats = [(torch.randn(a, dtype=torch.bfloat16), torch.randn(b, dtype=torch.bfloat16))
            for a, b in (e.input_shapes[:2] for e in prof.events() if e.name == "aten::mm")]
    B, T = batch[0].shape
    hd, heads, kv = cfg.attention.head_dim or cfg.dim // cfg.n_heads, cfg.n_heads, cfg.attention.n_kv_heads

    def attention():
        for _ in range(2 * cfg.n_layers):
            q = torch.randn(B, heads, T, hd, dtype=torch.bfloat16, requires_grad=True)
            k, v = (torch.randn(B, kv, T, hd, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            y.backward(torch.ones_like(y))

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(3):
            start = clock()
            fn()
            times.append(clock() - start)
        return min(times)

    step = best(lambda: train_steps(forward, module, batch, 1, autocast))
    kernels = best(lambda: [a @ b for a, b in mats]) + best(attention)
    return {"two_steps_s": round(step, 3), "their_matmuls_and_attention_s": round(kernels, 3),
            "max_ratio_on_these_kernels": round(step / kernels, 3)}


def train_steps(forward, params_model, batch, steps, autocast, masters=None) -> float:
    """Seconds per step of `steps` optimizer steps (after the caller's warmup)."""
    opt = build_optimizer(params_model, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, masters=masters)
    for _ in range(steps + 1):  # the first step allocates AdamW state and warms the allocator
        if _ == 1:
            if batch[0].is_cuda:
                torch.cuda.synchronize()
            start = CLOCK()
        loss, tokens = accumulate_gradients(forward, [batch], autocast=autocast)
        optimizer_step(params_model, opt, loss, tokens, grad_clip=1.0)
    if batch[0].is_cuda:
        torch.cuda.synchronize()
    return (CLOCK() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repetition")
    parser.add_argument("--repeat", type=int, default=3, help="alternated repetitions (best is reported)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: lmforge's bf16 weights + fp32 masters vs transformers under autocast")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="process: CPU seconds (both sides' tok/s then per CPU-second; for a busy machine, with "
                             "OMP_WAIT_POLICY=PASSIVE so idle threads do not spin)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models (the same for each)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="glibc's default malloc for both libraries (lmforge's Trainer keeps freed memory)")
    parser.add_argument("--bound", action="store_true",
                        help="bf16: also transformers' step against its matmuls and attention alone (the most any "
                             "library on the same kernels could gain)")
    parser.add_argument("--profile", action="store_true", help="print lmforge's top ops (torch.profiler) to stderr")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    if not args.default_allocator:
        keep_freed_memory()
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter
    from transformers import LlamaConfig, LlamaForCausalLM

    device = torch.device(args.device)
    cfg = get_preset("tiny-llama", dim=args.dim, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.kv_heads,
                     ffn_dim=args.ffn, vocab_size=args.vocab, max_seq_len=args.seq)
    torch.manual_seed(0)
    ours = Transformer(cfg).to(device)
    hf_cfg = LlamaConfig.from_dict(config_to_hf(cfg))
    hf_cfg._attn_implementation = "sdpa"
    theirs = LlamaForCausalLM(hf_cfg).to(device)
    x = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
    batch = (x, torch.roll(x, -1, dims=1))
    mask = torch.ones_like(x)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32

    masters = MasterWeights(ours) if args.precision == "bf16" else None

    def autocast():
        return (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16"
                else contextlib.nullcontext())

    def hf_forward(ids):
        return theirs(input_ids=ids, attention_mask=mask).logits

    runs = {"lmforge": (ours, ours, autocast, masters),  # as its Trainer: autocast has no bf16 weight to cast
            "transformers": (hf_forward, theirs, autocast, None)}
    if args.compile:  # each library's model compiled the same way; the first (timed-out) step pays the compile
        compiled_ours, compiled_theirs = torch.compile(ours), torch.compile(theirs)
        runs = {"lmforge": (compiled_ours, ours, autocast, masters),
                "transformers": (lambda ids: compiled_theirs(input_ids=ids, attention_mask=mask).logits, theirs,
                                 autocast, None)}
    best = {name: float("inf") for name in runs}
    for _ in range(args.repeat):
        for name, (forward, module, context, weights) in runs.items():
            best[name] = min(best[name], train_steps(forward, module, batch, args.steps, context, weights))
    if args.profile:
        for name, (forward, module, context, weights) in runs.items():
            with torch.profiler.profile() as prof:
                train_steps(forward, module, batch, 1, context, weights)
            print(f"--- {name}", file=sys.stderr)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)
    tokens = args.batch * args.seq
    peak = measure_peak_flops(device, dtype, size=2048 if device.type == "cpu" else 8192, reps=4)
    ours_tps, theirs_tps = tokens / best["lmforge"], tokens / best["transformers"]
    emulated = args.precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16()
    print(json.dumps({
        **({"note": slow_bf16_note()} if emulated else {}),
        "device": str(device),
        "precision": args.precision + (" (lmforge: bf16 weights + fp32 masters; transformers: autocast)"
                                       if args.precision == "bf16" else ""),
        "compiled": args.compile, "clock": args.clock,
        "allocator": "glibc default" if args.default_allocator else "freed memory kept (lmforge Trainer's)",
        "params_m": round(cfg.num_params() / 1e6, 2), "batch": args.batch, "seq": args.seq,
        "ours_tok_per_s": round(ours_tps, 1), "baseline_tok_per_s": round(theirs_tps, 1),
        "ratio": round(ours_tps / theirs_tps, 3),
        **({"ours_mfu": round(flops_per_token(cfg, args.seq) * ours_tps / peak, 4)} if args.clock == "wall" else {}),
        "matmul_peak_tflops": round(peak / 1e12, 3),
        **({"transformers_kernel_bound": kernel_bound(hf_forward, theirs, batch, autocast, cfg, CLOCK)}
           if args.bound and args.precision == "bf16" else {})}))


if __name__ == "__main__":
    main()
