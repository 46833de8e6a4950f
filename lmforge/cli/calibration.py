"""What `lmforge quantize` and `lmforge prune` share: the source model, output and window-length flags, and the
calibration text (a file, or the embedded corpus) cut into token windows of the loaded model (AWQ / GPTQ /
SmoothQuant statistics, Wanda's input norms, prune's recovery fine-tune)."""

from pathlib import Path

import typer

from lmforge.common.errors import LmforgeError

CALIBRATION_SEED = 1  # the embedded corpus with another seed than pretraining's default (0): text it never saw
SOURCE = typer.Argument("smollm2-135m", help="Embedded model name, Hugging Face directory or .gguf file.")
SEQ_LEN = typer.Option(128, "--seq-len", help="Tokens per calibration window.")
OUT = typer.Option(..., "--out", "-o", help="Output directory (must be empty or absent).")


def read_calibration(path: Path | None, samples: int, seq_len: int) -> tuple[str, str]:
    """(text, where it came from): the file's text, or documents of the embedded corpus. Checked before any model
    is loaded: a missing or empty file is a one-line error."""
    if path is None:
        from lmforge.data.corpus import document_text

        parts, size, i = [], 0, 0
        while size < samples * seq_len * 6:  # ~4 bytes per token on the corpus' BPE; 6 leaves room
            parts.append(document_text(CALIBRATION_SEED, i)[1])
            size, i = size + len(parts[-1]), i + 1
        return "\n\n".join(parts), "the embedded corpus"
    if not path.is_file():
        raise LmforgeError(f"--calibration {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LmforgeError(f"--calibration {path}: cannot read it as UTF-8 text ({err})") from None
    if not text.strip():
        raise LmforgeError(f"--calibration {path} is empty: calibration needs text")
    return text, str(path)


def calibration_windows_of(lm, text: str, where: str, samples: int, seq_len: int):
    """`samples` windows of at most `seq_len` tokens (the model's context at most) of the text, in lm's tokenizer."""
    from lmforge.quant.calibration import calibration_windows

    if lm.tokenizer is None:
        raise LmforgeError(f"{lm.source} has no tokenizer to encode the calibration text")
    return calibration_windows(text, lm.tokenizer, samples, min(seq_len, lm.config.max_seq_len), where)
