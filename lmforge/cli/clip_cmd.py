"""`lmforge clip`: contrastive pretraining of a tiny CLIP two-tower model on drawn shape x colour images, with
zero-shot accuracy on held-out images before and after. Thin: flags map to ClipTrainConfig fields.
"""

from __future__ import annotations

import typer


def clip_command(
    out: str = typer.Option("runs/clip", "--out", "-o", help="Run directory (model/ as a HF CLIP dir, log.jsonl)."),
    steps: int = typer.Option(2500, "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(20, "--batch-size", "-b", help="Distinct shape x colour classes per step (2-20)."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (warmup then cosine decay)."),
    loss: str = typer.Option("infonce", "--loss", help="infonce (CLIP, softmax over the batch) | sigmoid (SigLIP)."),
    image_size: int = typer.Option(16, "--image-size", help="Side of the drawn images in pixels."),
    patch_size: int = typer.Option(4, "--patch-size", help="ViT patch side (divides --image-size)."),
    dim: int = typer.Option(64, "--dim", help="Width of both towers and of the shared embedding."),
    layers: int = typer.Option(2, "--layers", help="Layers per tower."),
    heads: int = typer.Option(4, "--heads", help="Attention heads per layer."),
    train_per_class: int = typer.Option(200, "--train-per-class", help="Training images drawn per class."),
    test_per_class: int = typer.Option(10, "--test-per-class", help="Held-out images drawn per class."),
    seed: int = typer.Option(0, "--seed", help="Seed of the drawings, the init and the batches."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads (1 is fastest for tiny towers; 0: default)."),
) -> None:
    """Train a tiny CLIP on drawn images and print zero-shot accuracy on held-out images before / after."""
    from lmforge.train.clip_train import ClipTrainConfig, train_clip

    cfg = ClipTrainConfig(out=out, steps=steps, batch_size=batch_size, lr=lr, loss=loss, image_size=image_size,
                          patch_size=patch_size, dim=dim, layers=layers, heads=heads,
                          train_per_class=train_per_class, test_per_class=test_per_class, seed=seed, threads=threads)
    summary = train_clip(cfg, log=typer.echo)
    typer.echo(f"zero-shot accuracy: before {summary['before']:.1%} after {summary['after']:.1%}; "
               f"wrote {out}/model (a Hugging Face CLIP directory)")
