"""`lmforge convert`: turn a GGUF file or a Hugging Face directory into a Hugging Face directory.

The output is written to a temporary sibling directory and renamed into place at the end, so a failed or
interrupted conversion never leaves a half-written model behind.
"""

import shutil
import tempfile
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
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        lm.save(staging, dtype=torch_dtype)
        if out.exists():
            out.rmdir()  # checked empty above
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    cfg = lm.config
    print(f"wrote {out}: {cfg.family}, {cfg.num_params() / 1e6:.1f}M parameters, {cfg.n_layers} layers, "
          f"vocab {cfg.vocab_size}, {dtype}{'' if lm.tokenizer else ' (no tokenizer in source)'}")
