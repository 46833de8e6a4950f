"""`lmforge distill`: train a student on a teacher's soft targets (temperature, forward or reverse KL, mixed with
cross-entropy). Thin: flags map to TrainConfig and DistillConfig fields.
"""

from __future__ import annotations

from pathlib import Path

import typer

from lmforge.train.config import TrainConfig, parse_assignment


def distill_command(
    teacher: str = typer.Option(..., "--teacher", help="Teacher: a run's hf/ dir, an HF dir, a .gguf, or "
                                "smollm2-135m."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML of TrainConfig fields; flags win."),
    out: str | None = typer.Option(None, "--out", "-o", help="Run directory of the student."),
    preset: str | None = typer.Option(None, "--preset", help="Student model preset (vocab from the teacher)."),
    model_config: str | None = typer.Option(None, "--model-config", help="Student ModelConfig JSON instead."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps in total."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help="Sequences per micro-batch."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per training sequence."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Shards packed with the teacher's tokenizer "
                                        "(default: the embedded corpus, packed with it)."),
    tokenizer_dir: str | None = typer.Option(None, "--tokenizer", help="Tokenizer of the data (the teacher's)."),
    temperature: float = typer.Option(2.0, "--temperature", "-T", help="Softmax temperature of both models."),
    kind: str = typer.Option("forward", "--kind", help="forward: KL(teacher||student); reverse: KL(student||teacher)."),
    alpha: float = typer.Option(0.9, "--alpha", help="Weight of the T^2-scaled KL; 1 - alpha weighs the CE."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    set_: list[str] | None = typer.Option(None, "--set", help="Any other TrainConfig field: --set FIELD=VALUE."),
) -> None:
    """Distil a teacher into a (smaller) student with the same vocabulary."""
    flags = {k: v for k, v in locals().items() if k not in ("config", "set_", "teacher", "temperature", "kind",
                                                             "alpha") and v is not None}
    from lmforge.train.distill import DistillConfig  # torch loads here, not at --help
    from lmforge.train.distill_run import distill

    dcfg = DistillConfig(temperature=temperature, kind=kind, alpha=alpha)
    flags.setdefault("out", "runs/distill")
    flags.update(parse_assignment(s) for s in (set_ or []))
    cfg = TrainConfig.from_toml(config, **flags) if config else TrainConfig.from_dict(flags)
    s = distill(cfg, teacher, dcfg, log=typer.echo)
    typer.echo(f"{s['status']}: {s['step']} steps in {s['elapsed_s']:.0f} s; held-out KL(teacher||student) "
               f"{s['kl_before']:.4f} -> {s['kl_after']:.4f} nats/token ({s['kind']}); validation CE "
               f"{s['val_loss']:.3f} -> {cfg.out}")
