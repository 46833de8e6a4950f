"""`lmforge prune`: zero weights of the block linears by magnitude or Wanda, unstructured or N:M (2:4), optionally
followed by a short recovery fine-tune; writes a Hugging Face directory (dense tensors holding the zeros)."""

from pathlib import Path

import typer

from lmforge.cli import calibration as cal
from lmforge.common.errors import LmforgeError
from lmforge.common.files import staged_output_dir


def prune(
    src: str = cal.SOURCE,
    method: str = typer.Option("wanda", "--method", "-m", help="magnitude (|W|, per layer) or wanda "
                               "(|W| * input norm, per output row; reads --calibration)."),
    sparsity: float = typer.Option(0.5, "--sparsity", "-s", help="Share of each layer's weights set to zero "
                                   "(unstructured; N:M patterns imply 1 - N/M)."),
    pattern: str = typer.Option("unstructured", "--pattern", "-p", help="unstructured, or N:M: keep N of every M "
                                "consecutive input weights (2:4 is the semi-structured pattern)."),
    calibration: Path | None = typer.Option(None, "--calibration", help="UTF-8 text for Wanda's input norms and the "
                                            "recovery fine-tune (default: the embedded corpus)."),
    samples: int = typer.Option(64, "--samples", help="Calibration windows."),
    seq_len: int = cal.SEQ_LEN,
    recover_steps: int = typer.Option(0, "--recover-steps", help="Recovery fine-tune steps on the calibration text "
                                      "after pruning (0: none; causal LMs only). The zeros stay zero."),
    recover_lr: float = typer.Option(1e-4, "--recover-lr", help="AdamW learning rate of the recovery fine-tune."),
    out: Path = cal.OUT,
    dtype: str = typer.Option("float32", help="dtype the model is loaded, pruned and saved in."),
) -> None:
    """Prune a model's linear layers (embeddings and the LM head stay dense)."""
    from lmforge.quant.prune import PruneConfig

    cfg = PruneConfig(method=method, sparsity=sparsity, pattern=pattern)  # validates
    if recover_steps < 0 or recover_lr <= 0:
        raise LmforgeError(f"--recover-steps must be >= 0 and --recover-lr > 0, got {recover_steps} and {recover_lr}")
    needs_text = method == "wanda" or recover_steps > 0
    if calibration is not None and not needs_text:
        raise LmforgeError("--calibration is only read by --method wanda or --recover-steps > 0")
    text, where = cal.read_calibration(calibration, samples, seq_len) if needs_text else ("", "")
    from lmforge.formats.loader import load, resolve_dtype
    from lmforge.quant.prune import prune_model, sparsity_of
    from lmforge.quant.prune_recover import recover

    with staged_output_dir(out) as staging:
        lm = load(src, dtype=resolve_dtype(dtype))
        if getattr(lm.model, "quant_config", None) is not None:
            raise LmforgeError(f"{src} is quantized; prune the float model (then quantize it)")
        if recover_steps and not lm.config.attention.causal:
            raise LmforgeError("--recover-steps trains next-token prediction: it needs a causal LM, not an encoder")
        windows = cal.calibration_windows_of(lm, text, where, samples, seq_len) if needs_text else None
        masks = prune_model(lm.model, cfg, windows, log=lambda line: print(line, flush=True))
        losses = recover(lm.model, masks, windows, recover_steps, recover_lr, log=print) if recover_steps else []
        lm.save(staging)
    what = f"{method} {pattern}" + (f" {sparsity:.0%}" if pattern == "unstructured" else "")
    what += f", {len(losses)} recovery steps (loss {losses[0]:.3f} -> {losses[-1]:.3f})" if losses else ""
    print(f"wrote {out}: {what}, {sparsity_of(lm.model):.1%} of the block linears' weights are zero")
