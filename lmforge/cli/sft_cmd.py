"""`lmforge sft`: supervised fine-tuning on chat data (messages JSONL, Alpaca, ShareGPT) or the embedded
instruction task, loss on assistant tokens only. Thin: every flag maps to an SFTConfig field.
"""

from __future__ import annotations

from pathlib import Path

import typer


def sft_command(
    model: str | None = typer.Option(None, "--model", "-m", help="Model to fine-tune: a run's hf/ dir, a Hugging "
                                     "Face dir, a .gguf file or an embedded name (smollm2-135m)."),
    data: list[str] | None = typer.Option(None, "--data", "-d", help="Chat data file (repeatable): JSON lines or a "
                                          "JSON array. Default: the embedded instruction task."),
    format: str | None = typer.Option(None, "--format", help="auto | messages | alpaca | sharegpt (auto detects it "
                                      "per file)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML of SFTConfig fields; flags win."),
    out: str | None = typer.Option(None, "--out", "-o", help="Run directory (metrics, curves, report.md, hf/)."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (warmup, then cosine decay)."),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps", help="Linear warmup steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help="Rows per micro-batch."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per row; longer conversations are "
                                       "truncated (see --truncation)."),
    pack: bool | None = typer.Option(None, "--pack/--no-pack", help="Pack several conversations per row (attention "
                                     "stays inside each) or one per row."),
    truncation: str | None = typer.Option(None, "--truncation", help="right: keep a long conversation's start | "
                                          "drop: skip it."),
    neftune_alpha: float | None = typer.Option(None, "--neftune-alpha", help="NEFTune embedding noise (e.g. 5); "
                                               "0 disables it."),
    lora_r: int | None = typer.Option(None, "--lora-r", help="LoRA rank; 0 (default) fine-tunes every weight. The "
                                      "adapter is saved in PEFT format in out/adapter, the merged model in out/hf."),
    lora_alpha: float | None = typer.Option(None, "--lora-alpha", help="LoRA scale numerator (update = alpha/r BA)."),
    lora_dropout: float | None = typer.Option(None, "--lora-dropout", help="Dropout on the LoRA input."),
    lora_targets: list[str] | None = typer.Option(None, "--lora-target", help="Module name to adapt (repeatable; "
                                                  "default q_proj k_proj v_proj o_proj; all-linear for every one)."),
    base_bits: int | None = typer.Option(None, "--base-bits", help="QLoRA-style: quantize the frozen base to 8 or 4 "
                                         "bits (int4 group 32) before adding LoRA; only out/adapter is written."),
    train_examples: int | None = typer.Option(None, "--train-examples", help="Embedded task: training "
                                              "conversations."),
    task_seed: int | None = typer.Option(None, "--task-seed", help="Embedded task: generator seed."),
    eval_examples: int | None = typer.Option(None, "--eval-examples", help="Held-out conversations for exact "
                                             "match (own data: taken from it, at most a fifth)."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Answer length limit in evaluation."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the data order, shuffles and held-out split."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
    precision: str | None = typer.Option(None, "--precision", help="auto | fp32 | bf16 | fp16."),
    resume: bool | None = typer.Option(None, "--resume", help="Continue from the newest checkpoint in --out "
                                       "(only corrupt ones: refused, see --fresh)."),
    fresh: bool | None = typer.Option(None, "--fresh", help="Start from step 0 even where --out holds checkpoints: "
                                      "they move to OUT/checkpoints.old (nothing is deleted)."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress: a bar with ETA on a "
                                     "terminal, else (pipe, nohup, CI) a log line each tenth of the run or 10 s."),
    export_hf: bool | None = typer.Option(None, "--export-hf/--no-export-hf", help="Write out/hf at the end."),
) -> None:
    """Supervised fine-tuning (loss on assistant tokens only); prints held-out exact match before and after."""
    flags = {k: v for k, v in locals().items() if k != "config" and v is not None}
    from lmforge.train.post.sft import sft
    from lmforge.train.post.sft_config import SFTConfig

    for name in ("data", "lora_targets"):
        if name in flags:
            flags[name] = tuple(flags[name])
    cfg = SFTConfig.from_toml(config, **flags) if config else SFTConfig.from_dict(flags)
    s = sft(cfg, log=typer.echo)  # its log gives the held-out exact match before -> after (once)
    typer.echo(f"{s['status']}: {s['step']} steps in {s['elapsed_s']:.0f} s; report {Path(cfg.out) / 'report.md'}"
               + (f"; model {s['hf']}" if s.get("hf") else "")
               + (f"; adapter {s['adapter']}" if s.get("adapter") else ""))
