"""`lmforge tokenizer ...`: train a tokenizer from text files and look at how a tokenizer splits text.

Thin commands: they expand file arguments, call `lmforge.tokenizer`, and print one-line summaries.
"""

import glob
import json
import sys
from pathlib import Path

import typer

from lmforge.common.errors import LmforgeError
from lmforge.tokenizer import DEFAULT_SPECIAL_TOKENS, TOKENIZER_TYPES, Tokenizer, train_tokenizer
from lmforge.tokenizer.train import BYTE_BPE_PATTERNS

app = typer.Typer(
    help="Train tokenizers (BPE, byte-level BPE, WordPiece, Unigram) and inspect how they split text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Bytes read from the start of each file found inside a directory to decide whether it is text.
_SNIFF_BYTES = 8192


@app.command("train")
def train(
    files: list[str] | None = typer.Argument(
        None,
        help="Training files, directories (every text file inside, recursively) or glob patterns.",
        show_default=False,
    ),
    input: list[str] | None = typer.Option(
        None, "--input", "-i", help="Same as the positional FILES; repeatable: --input a.txt --input 'data/*.txt'."
    ),
    type: str = typer.Option("byte-bpe", "--type", "-t", help=f"Tokenizer model: {', '.join(TOKENIZER_TYPES)}."),
    vocab_size: int = typer.Option(..., "--vocab-size", help="Vocabulary size, special tokens included."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write (tokenizer.json, tokenizer_config.json)."),
    special_token: list[str] | None = typer.Option(
        None,
        "--special-token",
        "-s",
        help="A special token (repeatable; ids 0, 1, ... in order). Default per type: "
        + "; ".join(f"{t}: {' '.join(tokens)}" for t, tokens in DEFAULT_SPECIAL_TOKENS.items()),
        show_default=False,
    ),
    min_frequency: int = typer.Option(2, "--min-frequency", help="Merge only pairs seen at least this often."),
    pattern: str = typer.Option(
        "gpt2", "--pattern", help=f"byte-bpe pre-tokenization regex: {', '.join(BYTE_BPE_PATTERNS)}."
    ),
    split_digits: bool = typer.Option(
        False, "--split-digits", help="Every digit a token of its own (as Llama/SmolLM/Qwen): models see the digits."
    ),
) -> None:
    """Train a tokenizer on text files and save it as a Hugging Face tokenizer directory."""
    paths = expand_inputs([*(input or []), *(files or [])])
    tokenizer = train_tokenizer(
        files=paths,
        type=type,
        vocab_size=vocab_size,
        special_tokens=special_token or None,
        min_frequency=min_frequency,
        show_progress=True,
        pattern=pattern,
        split_digits=split_digits,
    )
    tokenizer.save(out)
    typer.echo(
        f"trained {type} tokenizer on {len(paths)} file(s): vocab size {tokenizer.vocab_size} "
        f"(asked {vocab_size}) -> {out}"
    )


@app.command("encode")
def encode(
    text: str = typer.Argument(..., help="Text to encode; '-' reads standard input."),
    tokenizer_dir: Path = typer.Option(
        ..., "--tokenizer", "-t", help="Tokenizer directory (tokenizer.json + tokenizer_config.json)."
    ),
    ids_only: bool = typer.Option(False, "--ids-only", help="Print only the ids, space-separated."),
    as_json: bool = typer.Option(False, "--json", help='Print {"tokens": [...], "ids": [...]} as JSON.'),
    special: bool = typer.Option(
        True, "--special/--no-special", help="Add the tokenizer's BOS/EOS (or [CLS]/[SEP]) around the text."
    ),
) -> None:
    """Show how a tokenizer splits TEXT: its tokens and their ids."""
    if ids_only and as_json:
        raise LmforgeError("choose one output format: --ids-only or --json, not both")
    if text == "-":
        text = sys.stdin.read()
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    ids = tokenizer.encode(text, add_special_tokens=special)
    tokens = [tokenizer.id_to_token(i) for i in ids]
    if ids_only:
        typer.echo(" ".join(map(str, ids)))
    elif as_json:
        typer.echo(json.dumps({"tokens": tokens, "ids": ids}, ensure_ascii=False))
    else:
        typer.echo(f"tokens: {tokens}")
        typer.echo(f"ids:    {ids}")
        typer.echo(f"count:  {len(ids)}")


def expand_inputs(specs: list[str]) -> list[Path]:
    """Files named directly, every text file under a directory (recursively), and glob matches; sorted, unique."""
    if not specs:
        raise LmforgeError("no training input: give files, directories or globs (FILES... or --input)")
    found: dict[Path, None] = {}
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found[path] = None
        elif path.is_dir():
            inside = [p for p in sorted(path.rglob("*")) if p.is_file() and not _hidden(p, path) and _is_text(p)]
            if not inside:
                raise LmforgeError(f"directory {path} holds no text files")
            found.update(dict.fromkeys(inside))
        elif glob.has_magic(spec):
            matches = [Path(m) for m in sorted(glob.glob(spec, recursive=True)) if Path(m).is_file()]
            if not matches:
                raise LmforgeError(f"no files match the pattern {spec!r}")
            found.update(dict.fromkeys(matches))
        else:
            raise LmforgeError(f"training input not found: {path}")
    return list(found)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_text(path: Path) -> bool:
    """UTF-8 without NUL bytes in the first few KiB (a multi-byte character cut at the end is fine)."""
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return len(head) == _SNIFF_BYTES and err.start >= len(head) - 3
    return True
