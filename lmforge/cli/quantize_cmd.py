"""`lmforge quantize`: int8 / int4 / int3 quantization of a model into a directory `lmforge.load` reads: round to
nearest, or calibrated (AWQ, GPTQ, SmoothQuant W8A8) on `--calibration FILE` (default: the embedded corpus)."""

from pathlib import Path

import typer

from lmforge.cli import calibration as cal
from lmforge.common.errors import LmforgeError
from lmforge.common.files import staged_output_dir

METHODS = ("rtn", "awq", "gptq", "smoothquant")
def quantize(
    src: str = cal.SOURCE,
    bits: int = typer.Option(8, "--bits", "-b", help="8 (int8 per output channel), 4 or 3 (per group; int3 is "
                             "stored in the int4 layout with codes 0..7: 3-bit error, int4 size and speed)."),
    group_size: int = typer.Option(32, "--group-size", "-g", help="int4 / int3 only: input channels per scale/zero "
                                   "(32, 64, 128 or 256; must divide every layer's input size)."),
    method: str = typer.Option("rtn", "--method", "-m", help="rtn (round to nearest), awq or gptq (--bits 4 or 3, "
                               "calibrated), smoothquant (W8A8: int8 activations too, --bits 8)."),
    calibration: Path | None = typer.Option(None, "--calibration", help="UTF-8 text file the calibrated methods "
                                            "run through the model (default: the embedded corpus)."),
    samples: int = typer.Option(64, "--samples", help="Calibration windows (awq, gptq, smoothquant)."),
    seq_len: int = cal.SEQ_LEN,
    head_bits: int = typer.Option(8, "--head-bits", help="Bits of the output projection (lm_head): 8 or 4."),
    skip: list[str] = typer.Option([], "--skip", help="Module name pattern left in float, e.g. 'lm_head' or "
                                   "'layers.0.*' (repeatable)."),
    out: Path = cal.OUT,
    dtype: str = typer.Option("float32", help="dtype of the tensors left in float (embedding, norms, skipped)."),
    from_gguf_blocks: bool = typer.Option(False, "--from-gguf-blocks", help="GGUF source, --bits 4 --group-size 32 "
                                          "only: Q4_0/Q4_1 layers keep the file's own codes and scales instead of "
                                          "being dequantized and re-quantized (other layers are re-quantized)."),
) -> None:
    """Quantize the linear layers' weights; the embedding and norms stay in float."""
    if method not in METHODS:
        raise LmforgeError(f"unknown --method {method!r}; valid: {', '.join(METHODS)}")
    if method == "rtn" and calibration is not None:
        raise LmforgeError("--calibration is only read by --method awq, gptq or smoothquant (rtn needs no data)")
    text, where = cal.read_calibration(calibration, samples, seq_len) if method != "rtn" else ("", "")
    from lmforge.formats.loader import load, load_gguf, resolve_dtype, resolve_source
    from lmforge.quant.int_linear import QuantConfig

    cfg = QuantConfig(bits=bits, group_size=group_size, skip=tuple(skip), head_bits=head_bits, method=method)
    if from_gguf_blocks:
        path = resolve_source(src)
        if path.suffix.lower() != ".gguf" or (bits, group_size, method) != (4, 32, "rtn"):
            raise LmforgeError("--from-gguf-blocks needs a .gguf source (or the embedded model), --method rtn, --bits "
                               f"4 --group-size 32; got {src} with --method {method} --bits {bits} "
                               f"--group-size {group_size}")
    with staged_output_dir(out) as staging:  # refuses an unwritable or non-empty --out before loading
        if from_gguf_blocks:
            lm = load_gguf(path, resolve_dtype(dtype), int4=cfg)
        else:
            lm = load(src, dtype=resolve_dtype(dtype))
            if getattr(lm.model, "quant_config", None) is not None:
                raise LmforgeError(f"{src} is already quantized")
            quantize_loaded(lm, cfg, text, where, samples, seq_len)
        lm.save(staging)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    what = f"{method} int{bits}" + (f" group {group_size}" if bits != 8 else "") + f", lm_head int{head_bits}"
    what += " (int8 activations)" if method == "smoothquant" else ""
    what += f", calibrated on {where}" if method != "rtn" else ""
    what += ", Q4 layers from the GGUF blocks" if from_gguf_blocks else ""
    print(f"wrote {out}: {what}{', skipped ' + ', '.join(skip) if skip else ''}, {size:.1f} MB")


def quantize_loaded(lm, cfg, text: str, where: str, samples: int, seq_len: int) -> None:
    from lmforge.quant.calibrated import quantize_calibrated
    from lmforge.quant.int_linear import check_group_size

    check_group_size(lm.model, cfg)  # before the calibration work
    windows = cal.calibration_windows_of(lm, text, where, samples, seq_len) if cfg.method != "rtn" else None
    quantize_calibrated(lm.model, cfg, windows, log=lambda line: print(line, flush=True))  # one line per block
