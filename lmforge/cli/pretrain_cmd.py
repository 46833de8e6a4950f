"""`lmforge pretrain`: train a model from scratch (by default a small preset on the embedded synthetic corpus)
and `lmforge report RUN_DIR`: the markdown report of a run. Thin: flags map to TrainConfig fields.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from lmforge.common.files import ensure_output_dir
from lmforge.train.config import TrainConfig, parse_assignment


def pretrain_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML of TrainConfig fields; flags win."),
    out: str | None = typer.Option(None, "--out", "-o", help="Run directory (checkpoints, metrics, report)."),
    resume: bool | None = typer.Option(None, "--resume/--no-resume", help="Continue from the newest valid checkpoint "
                                       "(none yet: start; only corrupt ones: refused, see --fresh)."),
    fresh: bool | None = typer.Option(None, "--fresh", help="Start from step 0 even where --out holds checkpoints: "
                                      "they move to OUT/checkpoints.old (nothing is deleted)."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps in total."),
    preset: str | None = typer.Option(None, "--preset", help="Model preset (vocab size comes from the tokenizer)."),
    model_config: str | None = typer.Option(None, "--model-config", help="ModelConfig JSON instead of --preset."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Packed shards (lmforge data pack) instead of the "
                                        "embedded corpus; needs --tokenizer."),
    tokenizer_dir: str | None = typer.Option(None, "--tokenizer", help="Tokenizer the shards were packed with."),
    corpus_documents: int | None = typer.Option(None, "--corpus-documents", help="Documents of the embedded corpus."),
    vocab_size: int | None = typer.Option(None, "--vocab-size", help="Byte-BPE vocabulary trained on the corpus."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per training sequence."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help="Sequences per micro-batch."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    schedule: str | None = typer.Option(None, "--schedule", help="cosine | wsd | constant (after linear warmup)."),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps", help="Linear warmup steps."),
    precision: str | None = typer.Option(None, "--precision", help="fp32 | bf16 | fp16 (GPU only, loss scaling)."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    parallel: str | None = typer.Option(None, "--parallel", help="none | ddp | fsdp (FSDP2); launch with torchrun "
                                        "--nproc_per_node N -m lmforge pretrain ... (batch size is per rank; "
                                        "checkpoints are sharded and resume on any number of ranks with the same "
                                        "global batch)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the weights and the data order."),
    activation_checkpointing: bool | None = typer.Option(
        None, "--activation-checkpointing/--no-activation-checkpointing", help="Recompute blocks in backward."),
    compile: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile the model."),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Validate every N steps."),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", help="Checkpoint every N steps."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress: a bar with ETA on a "
                                      "terminal, else (pipe, nohup, CI) a log line each tenth of the run or 10 s."),
    init_from: str | None = typer.Option(None, "--init", help="Continue pretraining this model (embedded name, HF "
                                         "directory or .gguf): its weights and tokenizer replace --preset."),
    add_tokens: str | None = typer.Option(None, "--add-tokens", help="With --init: file of new tokens (one a line); "
                                          "their embeddings start at the mean of their old sub-tokens."),
    train_text: str | None = typer.Option(None, "--train-text", help="With --init: UTF-8 text file to train on "
                                          "(documents split at blank lines) instead of the embedded corpus."),
    set_: list[str] | None = typer.Option(None, "--set", help="Any other TrainConfig field: --set FIELD=VALUE "
                                          "(repeatable; VALUE in TOML syntax)."),
) -> None:
    """Pretrain a language model; by default a small model on the embedded synthetic corpus (minutes on a CPU)."""
    flags = {k: v for k, v in locals().items() if k not in ("config", "set_") and v is not None}
    flags.update(parse_assignment(s) for s in (set_ or []))
    cfg = TrainConfig.from_toml(config, **flags) if config else TrainConfig.from_dict(flags)
    ensure_output_dir(cfg.out)  # an unwritable --out is a one-line error before anything slow
    from lmforge.train.pretrain import pretrain  # torch and torch.distributed load here, not at --help

    summary = pretrain(cfg, log=typer.echo)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        val = summary["val_loss"]
        typer.echo(f"{summary['status']}: {summary['step']} steps, {summary['tokens']:,} tokens in "
                   f"{summary['elapsed_s']:.0f} s; validation loss "
                   f"{'-' if val is None else f'{val:.3f}'} vs unigram baseline {summary['unigram_entropy']:.3f} "
                   f"nats/token -> {cfg.out}/report.md")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _leave_torchrun_rank()


def _leave_torchrun_rank() -> None:
    """End a torchrun rank whose run is complete (process group destroyed, every file written and closed) without the
    interpreter's teardown: there, gloo / FSDP objects still alive can abort the process ("terminate called without an
    active exception", seen in 1 two-rank FSDP run of 10 on a loaded 2-core machine), which torchrun reports as a
    failed run."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def report_command(run_dir: Path = typer.Argument(..., help="A pretraining run directory.")) -> None:
    """Write RUN_DIR/report.md (summary, loss / lr / throughput plots, samples)."""
    from lmforge.train.report import write_report

    typer.echo(f"wrote {write_report(run_dir)}")
