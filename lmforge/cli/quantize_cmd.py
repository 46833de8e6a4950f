"""`lmforge quantize`: weight-only int8 / int4 quantization of a model into a directory `lmforge.load` reads."""

from pathlib import Path

import typer

from lmforge.common.errors import LmforgeError
from lmforge.common.files import staged_output_dir


def quantize(
    src: str = typer.Argument("smollm2-135m", help="Embedded model name, Hugging Face directory or .gguf file."),
    bits: int = typer.Option(8, "--bits", "-b", help="8 (int8 per output channel) or 4 (int4 per group)."),
    group_size: int = typer.Option(32, "--group-size", "-g", help="int4 only: input channels per scale/zero "
                                   "(32, 64, 128 or 256; must divide every layer's input size)."),
    head_bits: int = typer.Option(8, "--head-bits", help="Bits of the output projection (lm_head): 8 or 4."),
    skip: list[str] = typer.Option([], "--skip", help="Module name pattern left in float, e.g. 'lm_head' or "
                                   "'layers.0.*' (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (must be empty or absent)."),
    dtype: str = typer.Option("float32", help="dtype of the tensors left in float (embedding, norms, skipped)."),
    from_gguf_blocks: bool = typer.Option(False, "--from-gguf-blocks", help="GGUF source, --bits 4 --group-size 32 "
                                          "only: Q4_0/Q4_1 layers keep the file's own codes and scales instead of "
                                          "being dequantized and re-quantized (other layers are re-quantized)."),
) -> None:
    """Quantize the linear layers' weights; the embedding and norms stay in float."""
    from lmforge.formats.loader import load, load_gguf, resolve_dtype, resolve_source
    from lmforge.quant.int_linear import QuantConfig, quantize_model

    cfg = QuantConfig(bits=bits, group_size=group_size, skip=tuple(skip), head_bits=head_bits)  # validate first
    if from_gguf_blocks:
        path = resolve_source(src)
        if path.suffix.lower() != ".gguf" or (bits, group_size) != (4, 32):
            raise LmforgeError("--from-gguf-blocks needs a .gguf source (or the embedded model) and --bits 4 "
                               f"--group-size 32; got {src} with --bits {bits} --group-size {group_size}")
    with staged_output_dir(out) as staging:  # refuses an unwritable or non-empty --out before loading
        if from_gguf_blocks:
            lm = load_gguf(path, resolve_dtype(dtype), int4=cfg)
        else:
            lm = load(src, dtype=resolve_dtype(dtype))
            if getattr(lm.model, "quant_config", None) is not None:
                raise LmforgeError(f"{src} is already quantized")
            quantize_model(lm.model, bits=bits, group_size=group_size, skip=tuple(skip), head_bits=head_bits)
        lm.save(staging)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    what = f"int{bits}" + (f" group {group_size}" if bits == 4 else "") + f", lm_head int{head_bits}"
    what += ", Q4 layers from the GGUF blocks" if from_gguf_blocks else ""
    print(f"wrote {out}: {what}{', skipped ' + ', '.join(skip) if skip else ''}, {size:.1f} MB")
