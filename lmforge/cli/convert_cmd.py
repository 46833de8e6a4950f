"""`lmforge convert`: turn a GGUF file or a Hugging Face directory into a Hugging Face directory."""

from pathlib import Path

import typer

from lmforge.common.errors import LmforgeError


def convert(
    src: str = typer.Argument(..., help="A .gguf file, a Hugging Face model directory, or 'smollm2-135m'."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (must be empty or absent)."),
    dtype: str = typer.Option("float32", help="Weight dtype to write: float32, bfloat16 or float16."),
) -> None:
    """Convert a model (GGUF dequantized, or HF) to a Hugging Face directory that transformers loads."""
    from lmforge.model.loader import load, resolve_dtype

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmforgeError(f"output {out} already exists and is not an empty directory")
    torch_dtype = resolve_dtype(dtype)
    lm = load(src, dtype=torch_dtype)
    lm.save(out, dtype=torch_dtype)
    cfg = lm.config
    print(f"wrote {out}: {cfg.family}, {cfg.num_params() / 1e6:.1f}M parameters, {cfg.n_layers} layers, "
          f"vocab {cfg.vocab_size}, {dtype}{'' if lm.tokenizer else ' (no tokenizer in source)'}")
