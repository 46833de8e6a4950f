"""`lmforge convert`: turn a GGUF file or a Hugging Face directory into a Hugging Face directory.

The output is written to a temporary sibling directory and renamed into place at the end, so a failed or
interrupted conversion never leaves a half-written model behind.
"""

from pathlib import Path

import typer

from lmforge.common.files import staged_output_dir


def convert(
    src: str = typer.Argument(..., help="A .gguf file, a Hugging Face model directory, or 'smollm2-135m'."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (must be empty or absent)."),
    dtype: str = typer.Option("float32", help="Weight dtype to write: float32, bfloat16 or float16."),
) -> None:
    """Convert a model (GGUF dequantized, or HF) to a Hugging Face directory that transformers loads."""
    from lmforge.formats.loader import load, resolve_dtype

    torch_dtype = resolve_dtype(dtype)
    with staged_output_dir(out) as staging:  # refuses an unwritable or non-empty --out before loading
        lm = load(src, dtype=torch_dtype)
        lm.save(staging, dtype=torch_dtype)
    cfg = lm.config
    print(f"wrote {out}: {cfg.family}, {cfg.num_params() / 1e6:.1f}M parameters, {cfg.n_layers} layers, "
          f"vocab {cfg.vocab_size}, {dtype}{'' if lm.tokenizer else ' (no tokenizer in source)'}")
