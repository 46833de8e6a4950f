"""`lmforge data ...`: run a data-cleaning pipeline described in TOML, or write a sample corpus to try it on.

Thin commands: they load configs, call `lmforge.data`, and show a progress bar (log lines when stderr is not
a terminal) and a summary table.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lmforge.cli import data_quality_cmd

app = typer.Typer(
    help="Clean text corpora (URL, language, Gopher/C4/FineWeb quality filters, classifier-based quality and "
    "toxicity filters, PII, exact and MinHash dedup), pack them into token shards, and generate a sample corpus "
    "with ground truth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_quality_cmd.app, name="quality")


def _summary_table(stats: dict) -> Table:
    table = Table(title="data pipeline", show_lines=False)
    for column in ("step", "docs in", "docs out", "kept", "MB out", "top removal reasons"):
        table.add_column(column, justify="left" if column in ("step", "top removal reasons") else "right")
    for s in stats["steps"]:
        kept = s["docs_out"] / s["docs_in"] if s["docs_in"] else 1.0
        reasons = ", ".join(f"{r.split(':', 1)[-1]} {n}" for r, n in list(s["removed"].items())[:3])
        table.add_row(s["name"], str(s["docs_in"]), str(s["docs_out"]), f"{kept:.1%}",
                      f"{s['bytes_out'] / 1e6:.2f}", reasons)
    return table


class _ShardLog:
    """Progress as plain log lines on stderr, for when it is not a terminal (CI, nohup, pipes): a line when a
    stage ends, and at most one every `interval` seconds while it runs."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval, self.start = interval, time.monotonic()
        self.last = self.start

    def __call__(self, label: str, done: int, total: int, skip: bool) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= self.interval:
            self.last = now
            print(f"{label}: {done}/{total} shards, {now - self.start:.1f} s", file=sys.stderr, flush=True)


def _print_read_summary(read: dict, kept: int, skipped: int) -> None:
    print(f"read {read['records']} documents from {read['files']} files (skipped {read['malformed_json']} "
          f"malformed, {read['undecodable']} undecodable, {read['missing_text']} without text, "
          f"{read.get('invalid_unicode', 0)} not Unicode); kept {kept}; {skipped} finished shards reused")
    bad = read.get("bad_files", [])
    for entry in bad[:10]:
        print(f"bad file {entry['file']}: {entry['reason']}")
    if len(bad) > 10:
        print(f"... and {len(bad) - 10} more bad files (all in report.md)")


@app.command("run")
def run(
    pipeline: Path = typer.Argument(..., help="Pipeline TOML file with its input, output and steps tables.",
                                    show_default=False),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Output directory; overrides the output dir of the pipeline file."),
    keep_removed: bool | None = typer.Option(
        None, "--keep-removed/--no-keep-removed",
        help="Also write removed documents with their reason (overrides keep_removed of the pipeline file).",
        show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no table; print the report path."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad input (a corrupt or truncated file, a "
                                "malformed line) with a one-line error. Default: count it, report it and go on."),
    engine: str | None = typer.Option(None, "--engine", help="'local' (one process, resumable) or 'ray' (Ray Data, "
                                      "same output); overrides [run] engine of the pipeline file.", show_default=False),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster to join ('auto', HOST:6379); "
                                           "implies --engine ray. Default: [run] ray_address, else a local Ray.",
                                           show_default=False),
) -> None:
    """Run a pipeline: finished shards are skipped on re-runs; writes data/ (with manifest.json), stats.json and
    report.md. Bad input lines and files are counted and listed in the report, never fatal unless --strict."""
    from lmforge.data.pipeline import PipelineRunner
    from lmforge.data.pipeline_config import load_pipeline

    config = load_pipeline(pipeline)
    if ray_address is not None:
        config = dataclasses.replace(config, ray_address=ray_address, engine=engine or "ray")
    elif engine is not None:
        config = dataclasses.replace(config, engine=engine)
    if out is not None:
        config = dataclasses.replace(config, output_dir=str(out))
    if keep_removed is not None:
        config = dataclasses.replace(config, keep_removed=keep_removed)
    if strict:
        config = dataclasses.replace(config, reader=dataclasses.replace(config.reader, strict=True))
    console = Console(stderr=True, quiet=quiet)
    skipped = 0
    log = _ShardLog() if not quiet and not console.is_terminal else None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet or log is not None) as progress:
        tasks: dict[str, int] = {}

        def on_shard(label: str, done: int, total: int, skip: bool) -> None:
            nonlocal skipped
            skipped += skip
            if log is not None:
                log(label, done, total, skip)
                return
            if label not in tasks:
                tasks[label] = progress.add_task(label[:70], total=total)
            progress.update(tasks[label], completed=done)

        if config.engine == "ray":
            from lmforge.data.ray_runner import RayPipelineRunner

            stats = RayPipelineRunner(config, progress=on_shard).run()
        else:
            stats = PipelineRunner(config, progress=on_shard).run()
    if not quiet:
        Console().print(_summary_table(stats))
        _print_read_summary(stats["read"], stats["output"]["docs"], skipped)
    print(f"report: {Path(config.output_dir) / 'report.md'}")


@app.command("sample")
def sample(
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write corpus/, ground_truth.jsonl, "
                             "summary.json and an example pipeline.toml.", show_default=False),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes the same bytes."),
    good: int = typer.Option(300, "--good", help="Good English prose documents."),
    per_language: int = typer.Option(15, "--per-language", help="Documents in each of French, German, "
                                     "Spanish and Chinese."),
    spam: int = typer.Option(60, "--spam", help="Spam and boilerplate pages (keyword stuffing, link farms, "
                             "lorem ipsum, cookie walls, hashtags, code)."),
    seo: int = typer.Option(0, "--seo", help="Promotional pages that pass every rule filter (kind spam:seo), for "
                            "the quality classifier to catch."),
    blocked_urls: int = typer.Option(10, "--blocked-urls", help="Good prose served from blocklisted domains."),
    exact_duplicates: int = typer.Option(30, "--exact-duplicates", help="Planted exact copies (modulo case and "
                                         "whitespace) of good documents."),
    near_duplicates: int = typer.Option(40, "--near-duplicates", help="Planted near copies of good documents."),
    pii: int = typer.Option(30, "--pii", help="Good documents given an e-mail, a phone number and an IP address."),
    shards: int = typer.Option(2, "--shards", help="Corpus files (even: .jsonl, odd: .jsonl.zst)."),
    min_jaccard: float = typer.Option(0.8, "--min-jaccard", help="Lowest word-5-gram Jaccard of a near copy."),
    max_jaccard: float = typer.Option(0.97, "--max-jaccard", help="Highest word-5-gram Jaccard of a near copy."),
) -> None:
    """Write a deterministic sample web corpus with ground truth (and a pipeline.toml to clean it)."""
    from lmforge.data.sample_corpus import SampleConfig, write_sample

    config = SampleConfig(seed=seed, good=good, per_language=per_language, spam=spam, seo=seo,
                          blocked_urls=blocked_urls,
                          exact_duplicates=exact_duplicates, near_duplicates=near_duplicates, pii=pii,
                          shards=shards, min_jaccard=min_jaccard, max_jaccard=max_jaccard)
    summary = write_sample(out, config)
    kinds = ", ".join(f"{k} {n}" for k, n in summary["kinds"].items())
    print(f"wrote {summary['documents']} documents to {out / 'corpus'} ({kinds})")
    print(f"ground truth: {out / 'ground_truth.jsonl'}; try: lmforge data run {out / 'pipeline.toml'}")


@app.command("pack")
def pack(
    tokenizer: Path = typer.Option(..., "--tokenizer", "-t", help="Hugging Face tokenizer directory "
                                   "(tokenizer.json with an eos_token).", show_default=False),
    input: list[str] = typer.Option(..., "--input", "-i", help="Input files, directories or globs "
                                    "(.txt, .jsonl[.gz|.zst], .parquet); repeatable. A `data run` output folder "
                                    "(data/) gives the shards its manifest.json lists.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the shards and index.json.",
                             show_default=False),
    seq_len: int = typer.Option(..., "--seq-len", help="Tokens per training sequence.", show_default=False),
    val_fraction: float = typer.Option(0.01, "--val-fraction", help="Share of documents for validation."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/validation split."),
    shard_rows: int = typer.Option(8192, "--shard-rows", help="Sequences per shard file."),
    text_field: str = typer.Option("text", "--text-field", help="JSON/parquet field holding the text."),
    no_eos: bool = typer.Option(False, "--no-eos", help="Do not append the EOS token after each document."),
) -> None:
    """Tokenize documents and pack them into fixed-length memory-mapped shards (train and val)."""
    from lmforge.data.pack import PackConfig, pack_documents
    from lmforge.data.readers import ReaderConfig, ReadStats, read_documents
    from lmforge.tokenizer import Tokenizer

    config = PackConfig(seq_len=seq_len, val_fraction=val_fraction, seed=seed, shard_rows=shard_rows,
                        append_eos=not no_eos)
    tok = Tokenizer.from_dir(tokenizer)
    stats = ReadStats()
    docs = read_documents(list(input), ReaderConfig(text_field=text_field), stats)
    index = pack_documents(docs, tok, out, config)
    for name, split in index["splits"].items():
        print(f"{name}: {split['documents']} documents, {split['tokens']} tokens, {split['rows']} sequences "
              f"of {seq_len} in {len(split['shards'])} shards ({split['dropped_tokens']} tail tokens dropped)")
    print(f"read {stats.records} documents (skipped {stats.malformed_json} malformed, {stats.undecodable} "
          f"undecodable, {stats.missing_text} without text); index: {out / 'index.json'} ({index['dtype']})")


@app.command("steps")
def steps() -> None:
    """List the pipeline step types and their parameters with defaults."""
    from lmforge.data.steps import STEP_TYPES

    for name, step_type in STEP_TYPES.items():
        fields = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(step_type.config)
                           if f.default is not dataclasses.MISSING)
        kind = "global" if step_type.is_global else "per-document"
        print(f"{name} ({kind}): {fields}")
