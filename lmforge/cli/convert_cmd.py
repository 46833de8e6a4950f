"""`lmforge convert`: turn a GGUF file or a Hugging Face directory into a Hugging Face directory or a GGUF file.

The output is written to a temporary sibling and renamed into place at the end, so a failed or interrupted
conversion never leaves a half-written model behind; an existing --out is refused (--to gguf: unless --force).
"""

from pathlib import Path

import typer

from lmforge.common.errors import LmforgeError
from lmforge.common.files import staged_output_dir

TARGETS = ("hf", "gguf")


def convert(
    src: str = typer.Argument(..., help="A .gguf file, a Hugging Face model directory, or 'smollm2-135m'."),
    out: Path = typer.Option(..., "--out", "-o",
                             help="Output directory (--to hf: must be empty or absent) or .gguf file (--to gguf)."),
    dtype: str = typer.Option("float32", help="Weight dtype to write: float32, bfloat16 or float16 (--to hf)."),
    to: str = typer.Option("hf", "--to", help="Output format: hf (Hugging Face directory) or gguf (llama.cpp file)."),
    gguf_type: str = typer.Option("f16", "--type",
                                  help="GGUF weight type (--to gguf): f32, f16, q8_0, q4_0 or q4_k; norms stay f32."),
    force: bool = typer.Option(False, "--force", help="--to gguf: replace an existing --out file (the new file is "
                               "written beside it and renamed over it only once complete)."),
) -> None:
    """Convert a model (GGUF dequantized, or HF) to a Hugging Face directory or a GGUF file."""
    from lmforge.formats.loader import load, resolve_dtype

    if to not in TARGETS:
        raise LmforgeError(f"unknown --to {to!r}; valid: {', '.join(TARGETS)}")
    if to == "gguf":
        return _to_gguf(src, out, gguf_type, force)
    torch_dtype = resolve_dtype(dtype)
    with staged_output_dir(out) as staging:  # refuses an unwritable or non-empty --out before loading
        lm = load(src, dtype=torch_dtype)
        lm.save(staging, dtype=torch_dtype)
    cfg = lm.config
    print(f"wrote {out}: {cfg.family}, {cfg.num_params() / 1e6:.1f}M parameters, {cfg.n_layers} layers, "
          f"vocab {cfg.vocab_size}, {dtype}{'' if lm.tokenizer else ' (no tokenizer in source)'}")


def _to_gguf(src: str, out: Path, gguf_type: str, force: bool) -> None:
    from lmforge.common.files import honour_umask
    from lmforge.formats.gguf_export import EXPORT_TYPES, check_export, write_gguf
    from lmforge.formats.loader import load

    if gguf_type not in EXPORT_TYPES:
        raise LmforgeError(f"unknown --type {gguf_type!r}; valid: {', '.join(EXPORT_TYPES)}")
    if out.is_dir():
        raise LmforgeError(f"--out {out} is a directory; --to gguf writes one file (e.g. {out / 'model.gguf'})")
    if not out.parent.is_dir():
        raise LmforgeError(f"--out {out}: directory {out.parent} does not exist")
    if out.exists() and not force:
        raise LmforgeError(f"--out {out} already exists; pass --force to replace it")
    lm = load(src, dtype="float32")
    check_export(lm.config.family, gguf_type)
    counts = write_gguf(lm.model, lm.tokenizer, out, gguf_type, lm.generation_config, name=Path(src).stem)
    honour_umask(out)
    cfg = lm.config
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    params = cfg.num_params() if hasattr(cfg, "num_params") else sum(p.numel() for p in lm.model.parameters())
    print(f"wrote {out}: {cfg.family}, {params / 1e6:.1f}M parameters, {cfg.n_layers} layers, "
          f"vocab {cfg.vocab_size}, tensors {kinds}{'' if lm.tokenizer else ' (no tokenizer in source)'}, "
          f"{out.stat().st_size / 2**20:.1f} MiB")
