"""`lmforge bench decode`: greedy batch-1 decode tokens/s of a model, next to the machine's bandwidth bound."""

import json

import typer

from lmforge.cli.device_option import DEVICE, pick_device, place
from lmforge.common.errors import LmforgeError

app = typer.Typer(help="Speed measurements (lmforge only; benchmarks/decode.py compares with transformers).",
                  no_args_is_help=True)


@app.command("decode")
def decode(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Embedded model name, HF/quantized dir, .gguf."),
    dtype: str = typer.Option("float32", help="Float dtype: float32 or bfloat16 (int8/int4 run best on bfloat16)."),
    bits: int = typer.Option(None, "--bits", help="Quantize first: 8 or 4 (default: no quantization)."),
    group_size: int = typer.Option(32, "--group-size", help="int4 group size (32, 64, 128, 256)."),
    tokens: int = typer.Option(128, "--tokens", "-n", min=1, help="New tokens per timed run."),
    repeat: int = typer.Option(3, "--repeat", min=1, help="Timed runs; the best is reported."),
    device: str = DEVICE,
) -> None:
    """Print one JSON line: tokens/s, read bandwidth (GB/s), the bandwidth bound (tokens/s) and the speed of the
    projections alone (every linear once on one row: what this machine's matmul kernels allow)."""
    import torch

    from lmforge.formats.loader import load
    from lmforge.generation.decode_bench import (
        PROMPT,
        bytes_read_per_token,
        decode_tokens_per_s,
        projections_only_tokens_per_s,
        read_bandwidth_gb_s,
    )
    from lmforge.model.inference import prepare_for_inference
    from lmforge.quant.int_linear import quantize_model

    where = pick_device(device, dtype)
    lm = place(load(model, dtype=dtype), where)
    if lm.tokenizer is None:
        raise LmforgeError(f"{model} has no tokenizer (tokenizer.json); cannot encode the prompt")
    if bits is not None:
        if getattr(lm.model, "quant_config", None) is not None:
            raise LmforgeError(f"{model} is already quantized; drop --bits")
        quantize_model(lm.model, bits=bits, group_size=group_size)
    prepare_for_inference(lm.model)  # fused projections, packed linears, CPU kernels (inference only)
    prompt = lm.tokenizer.encode(PROMPT)
    if len(prompt) + tokens + 8 > lm.config.max_seq_len:
        raise LmforgeError(f"--tokens {tokens} exceeds the model's context of {lm.config.max_seq_len}")
    bandwidth = read_bandwidth_gb_s(device=where)  # the memory the weights stream from: DRAM or the GPU's
    weight_bytes = bytes_read_per_token(lm.model)
    speed, _ = decode_tokens_per_s(lm.model, prompt, tokens, repeat)
    kernels = projections_only_tokens_per_s(lm.model)
    quant = getattr(lm.model, "quant_config", None)
    bound = bandwidth * 1e9 / weight_bytes
    print(json.dumps({
        "benchmark": "greedy_decode", "model": model, "dtype": dtype, "device": str(where),
        "quantization": quant.to_dict() if quant else None, "tokens": tokens, "threads": torch.get_num_threads(),
        "tok_per_s": round(speed, 1), "weight_mb_per_token": round(weight_bytes / 1e6, 1),
        "read_bandwidth_gb_s": round(bandwidth, 1), "bound_tok_per_s": round(bound, 1),
        "fraction_of_bound": round(speed / bound, 3), "projections_only_tok_per_s": round(kernels, 1),
    }))
