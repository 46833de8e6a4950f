"""`lmforge scaling`: the scaling-law sweep over model sizes x token budgets on the embedded corpus, the
Chinchilla approach-3 fit and the compute-optimal frontier. Thin: flags map to ScalingConfig fields.
"""

from __future__ import annotations

import typer

from lmforge.common.errors import LmforgeError


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple(tuple(int(v) for v in item.lower().split("x")) for item in text.split(","))
    except ValueError:
        raise LmforgeError(f"--sizes expects DIMxLAYERS,... (e.g. 32x1,64x2), got {text!r}") from None


def scaling_command(
    out: str = typer.Option("runs/scaling", "--out", "-o", help="Sweep directory (runs, scaling.json, scaling.png)."),
    sizes: str = typer.Option("32x1,48x2,64x2,96x3", "--sizes", help="Models as DIMxLAYERS, comma-separated."),
    steps: str = typer.Option("40,80,160", "--steps", help="Token budgets as optimizer steps, comma-separated."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Sequences per step."),
    seq_len: int = typer.Option(64, "--seq-len", help="Tokens per sequence (D = steps x batch x seq_len)."),
    lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate of every run (cosine decay)."),
    corpus_documents: int = typer.Option(3000, "--corpus-documents", help="Documents of the embedded corpus."),
    vocab_size: int = typer.Option(512, "--vocab-size", help="Byte-BPE vocabulary shared by all runs."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads (1 is fastest for these tiny models)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
) -> None:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta on a sweep of tiny models and print the compute-optimal frontier."""
    from lmforge.train.scaling import ScalingConfig, scaling

    try:
        step_list = tuple(int(s) for s in steps.split(","))
    except ValueError:
        raise LmforgeError(f"--steps expects integers separated by commas, got {steps!r}") from None
    cfg = ScalingConfig(out=out, sizes=_sizes(sizes), steps=step_list, batch_size=batch_size, seq_len=seq_len,
                        lr=lr, corpus_documents=corpus_documents, vocab_size=vocab_size, threads=threads,
                        device=device)
    result = scaling(cfg, log=typer.echo)
    fit = result["fit"]
    typer.echo(f"fit: E={fit['E']:.4f} A={fit['A']:.4g} B={fit['B']:.4g} alpha={fit['alpha']:.4f} "
               f"beta={fit['beta']:.4f} (RMSE of log loss {result['fit_rmse_log_loss']:.4f})")
    typer.echo(f"compute-optimal: N_opt = {result['G']:.4g} (C/6)^{result['n_opt_exponent']:.3f}, "
               f"D_opt = (C/6)^{result['d_opt_exponent']:.3f} / {result['G']:.4g}")
    for row in result["frontier"][::2]:
        typer.echo(f"  C={row['flops']:.3g}: N_opt={row['n_opt']:.4g} D_opt={row['d_opt']:.4g} "
                   f"tokens/param={row['tokens_per_param']:.3g} loss={row['loss']:.4f}")
    typer.echo(f"wrote {cfg.out}/scaling.json and {result['png']}")
