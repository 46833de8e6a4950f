"""`lmforge eval ppl` (sliding-window perplexity on held-out text) and `lmforge eval needle` (passkey retrieval
accuracy over context lengths x key depths, as JSON and a heatmap PNG). Thin: the logic lives in lmforge.train.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lmforge.cli.dtype_warning import warn_if_slow_dtype
from lmforge.common.errors import LmforgeError

app = typer.Typer(help="Evaluate a model: perplexity on text, passkey retrieval.", no_args_is_help=True)


def _load(model: str, dtype: str, device: str):
    import torch

    import lmforge

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    warn_if_slow_dtype(dtype, device)
    lm = lmforge.load(model, dtype=dtype)
    if lm.tokenizer is None:
        raise LmforgeError(f"{model} has no tokenizer; evaluation needs one")
    lm.model.to(device).eval()
    return lm


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LmforgeError(f"{flag} expects comma-separated integers, got {text!r}") from None


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LmforgeError(f"{flag} expects comma-separated numbers, got {text!r}") from None


@app.command("ppl")
def ppl(
    model: str = typer.Argument(..., help="Embedded model name, Hugging Face directory or .gguf file."),
    text: Path = typer.Option(..., "--text", help="Held-out UTF-8 text file to score."),
    seq_len: int = typer.Option(1024, "--seq-len", help="Window length in tokens."),
    stride: int = typer.Option(512, "--stride", help="Window step; each scored token has >= seq_len - stride "
                               "tokens of context."),
    batch: int = typer.Option(1, "--batch", help="Windows per forward pass."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
) -> None:
    """Perplexity of MODEL on --text (sliding windows, every token scored once); prints JSON."""
    from lmforge.train.eval_ppl import perplexity

    if not text.is_file():
        raise LmforgeError(f"--text file not found: {text}")
    lm = _load(model, dtype, device)
    result = perplexity(lm.model, lm.tokenizer, text.read_text(encoding="utf-8"), seq_len=seq_len, stride=stride,
                        batch_size=batch)
    typer.echo(json.dumps({"model": model, "text": str(text), **result}, indent=2))


@app.command("needle")
def needle(
    model: str = typer.Argument(..., help="Embedded model name, Hugging Face directory or .gguf file."),
    lengths: str = typer.Option("256,512,1024", "--lengths", help="Comma-separated context lengths (tokens)."),
    depths: str = typer.Option("0,0.25,0.5,0.75,1", "--depths", help="Comma-separated key depths in [0, 1]."),
    trials: int = typer.Option(3, "--trials", help="Random keys per (length, depth) cell."),
    max_new_tokens: int = typer.Option(8, "--max-new-tokens", help="Tokens greedy-decoded for the answer."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random keys."),
    out: Path = typer.Option(Path("needle"), "--out", "-o", help="Output directory (needle.json, needle.png)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
) -> None:
    """Passkey retrieval (Mohtashami & Jaggi 2023): accuracy heatmap over --lengths x --depths."""
    from lmforge.train.needle import model_answer, run_passkey, write_heatmap, write_result

    lm = _load(model, dtype, device)
    answer = model_answer(lm.model, lm.tokenizer, max_new_tokens, lm.stop_token_ids())
    result = run_passkey(answer, lm.tokenizer, _ints(lengths, "--lengths"), _floats(depths, "--depths"), trials,
                         seed, log=typer.echo)
    result["model"] = model
    write_result(result, out / "needle.json")
    write_heatmap(result, out / "needle.png", title=f"passkey retrieval: {model}")
    typer.echo(json.dumps({"model": model, "mean_accuracy": result["mean_accuracy"],
                           "accuracy": result["accuracy"], "json": str(out / "needle.json"),
                           "png": str(out / "needle.png")}))
