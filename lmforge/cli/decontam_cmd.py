"""`lmforge decontam`: which eval items overlap the training data by a 13-gram (GPT-3 / Llama style), per task."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lmforge.common.errors import LmforgeError


def decontam(
    tasks: list[Path] = typer.Option(..., "--tasks", help="Eval task files (JSONL, one item per line); repeatable. "
                                     "The task name is the file name without .jsonl.", show_default=False),
    train: list[Path] = typer.Option(..., "--train", help="Training data: .txt (a file is one document), .jsonl "
                                     "(--text-field), an lmforge token-shard directory (lmforge data pack; needs "
                                     "--tokenizer), or a directory of those; repeatable.", show_default=False),
    n: int = typer.Option(13, "-n", "--ngram", help="Words per n-gram (13: GPT-3, Llama). Text is lower-cased and "
                          "stripped of punctuation first; items shorter than n words are matched whole."),
    fields: str = typer.Option(None, "--fields", help="Comma-separated item fields to check (default: every "
                               "string of the item)."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding a training JSONL row's text."),
    tokenizer: Path = typer.Option(None, "--tokenizer", "-t", help="Tokenizer directory (tokenizer.json) the token "
                                   "shards were packed with."),
    clean_dir: Path = typer.Option(None, "--clean-dir", help="Write each task without its contaminated items as "
                                   "CLEAN_DIR/<task>.jsonl."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the report (every contaminated item) as JSON here."),
) -> None:
    """Find eval items that share an n-gram with the training data: contaminated items and rate per task;
    optionally write clean task files without them."""
    from lmforge.eval.decontam import decontaminate, read_task, training_documents, write_clean

    if n < 1:
        raise LmforgeError(f"--ngram {n} must be >= 1 (13 is the GPT-3 / Llama choice)")
    names = [p.name.removesuffix(".jsonl") for p in tasks]
    if len(set(names)) != len(names):
        raise LmforgeError(f"two --tasks files share a name ({', '.join(names)}); task names must differ")
    field_names = tuple(f.strip() for f in fields.split(",") if f.strip()) if fields else ()
    items = [read_task(p, field_names) for p in tasks]
    tok = None
    if tokenizer is not None:
        from lmforge.tokenizer import Tokenizer

        if not (tokenizer / "tokenizer.json").is_file():
            raise LmforgeError(f"--tokenizer {str(tokenizer)!r} has no tokenizer.json")
        tok = Tokenizer.from_dir(tokenizer)
    report = decontaminate(items, training_documents(train, tok, text_field), n)
    print(f"{n}-gram overlap against {report['training_documents']} training documents")
    print(f"{'task':<24} {'items':>7} {'contaminated':>13} {'rate':>7}")
    for name, row in report["tasks"].items():
        print(f"{name:<24} {row['items']:>7} {row['contaminated']:>13} {row['rate']:>7.1%}")
    if clean_dir is not None:
        for path in write_clean(items, report, clean_dir):
            print(f"clean: {path}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"report: {out}")
