"""`lmforge clip`: contrastive pretraining of a tiny CLIP two-tower model on drawn images (open_clip's recipe, small).

Images of shape x colour classes (data/drawn_images.py) and their captions ("a red circle"); each step a batch of
distinct classes, each with a random training image, under the InfoNCE (CLIP) or sigmoid (SigLIP) loss. Zero-shot
accuracy on held-out draws (nearest caption by cosine) is measured before and after; the model is saved as a
Hugging Face CLIP directory (transformers' CLIPModel loads it), with a JSONL log of the run.
"""

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch

from lmforge.data.drawn_images import SHAPES, caption, classes, draw_set
from lmforge.data.images import ImageProcessor
from lmforge.formats.hf_vision import save_clip
from lmforge.model.vision.clip import CLIPConfig, CLIPModel, TextTowerConfig
from lmforge.model.vision.vit import ViTConfig
from lmforge.train.clip_config import ClipTrainConfig
from lmforge.train.precision import resolve_device

PAD, EOS = 0, 1


class CaptionVocab:
    """Word-level ids for the captions: 0 pad, 1 end-of-text, then every word the captions use."""

    def __init__(self):
        words = sorted({w for shape, colour in classes() for w in caption(shape, colour).split()})
        self.ids = {w: i + 2 for i, w in enumerate(words)}

    def __len__(self) -> int:
        return len(self.ids) + 2

    def encode(self, texts: list[str]) -> torch.Tensor:
        rows = [[self.ids[w] for w in text.split()] + [EOS] for text in texts]
        width = max(map(len, rows))
        return torch.tensor([row + [PAD] * (width - len(row)) for row in rows])


def build_model(cfg: ClipTrainConfig, vocab: CaptionVocab) -> CLIPModel:
    vision = ViTConfig(kind="clip", image_size=cfg.image_size, patch_size=cfg.patch_size, dim=cfg.dim,
                       n_layers=cfg.layers, n_heads=cfg.heads, ffn_dim=4 * cfg.dim)
    text = TextTowerConfig(vocab_size=len(vocab), max_positions=8, dim=cfg.dim, n_layers=cfg.layers,
                           n_heads=cfg.heads, ffn_dim=4 * cfg.dim, eos_token_id=EOS)
    return CLIPModel(CLIPConfig(text=text, vision=vision, projection_dim=cfg.dim, loss=cfg.loss))


@torch.no_grad()
def zero_shot_accuracy(model: CLIPModel, pixels: torch.Tensor, labels: torch.Tensor, prompts: torch.Tensor) -> float:
    """Share of images whose most similar class caption is their own."""
    model.eval()
    text = torch.nn.functional.normalize(model.text_features(prompts, (prompts != PAD).long()), dim=-1)
    image = torch.nn.functional.normalize(model.image_features(pixels), dim=-1)
    return (image @ text.t()).argmax(-1).eq(labels).float().mean().item()


def _pixels(drawn, processor) -> tuple[torch.Tensor, torch.Tensor]:
    index = {c: i for i, c in enumerate(classes())}
    return processor([d.image for d in drawn]), torch.tensor([index[(d.shape, d.colour)] for d in drawn])


def train_clip(cfg: ClipTrainConfig, log=print) -> dict:
    """Train, evaluate before / after, save; returns the summary written to summary.json."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = CaptionVocab()
    processor = ImageProcessor(shortest_edge=cfg.image_size, crop=(cfg.image_size, cfg.image_size))
    train_x, train_y = _pixels(draw_set(cfg.train_per_class, cfg.image_size, cfg.seed), processor)
    test_x, test_y = _pixels(draw_set(cfg.test_per_class, cfg.image_size, cfg.seed + 10_000), processor)
    prompts = vocab.encode([caption(shape, colour) for shape, colour in classes()])
    device = resolve_device(cfg.device)  # the drawn set is small: all of it moves to the device once
    train_x, train_y, test_x, test_y, prompts = (t.to(device) for t in (train_x, train_y, test_x, test_y, prompts))
    model = build_model(cfg, vocab).to(device)
    before = zero_shot_accuracy(model, test_x, test_y, prompts)
    log(f"zero-shot accuracy before training: {before:.1%} ({len(test_y)} held-out images, {len(prompts)} classes "
        f"of {len(SHAPES)} shapes x {len(prompts) // len(SHAPES)} colours; chance {1 / len(prompts):.1%})")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    by_class = [torch.nonzero(train_y == c).flatten() for c in range(len(prompts))]
    rng = random.Random(cfg.seed)
    start = time.perf_counter()
    with (out / "log.jsonl").open("w") as jsonl:
        for step in range(1, cfg.steps + 1):
            model.train()
            chosen = rng.sample(range(len(prompts)), cfg.batch_size)
            rows = torch.stack([by_class[c][rng.randrange(len(by_class[c]))] for c in chosen])
            ids = prompts[chosen]
            loss = model.loss(model(ids, train_x[rows], (ids != PAD).long()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            jsonl.write(json.dumps({"step": step, "loss": round(loss.item(), 5)}) + "\n")
            if step % max(1, cfg.steps // 5) == 0 or step == cfg.steps:
                log(f"step {step}/{cfg.steps} loss {loss.item():.4f}")
    seconds = time.perf_counter() - start
    after = zero_shot_accuracy(model, test_x, test_y, prompts)
    log(f"zero-shot accuracy after training: {after:.1%} ({seconds:.1f} s, "
        f"{cfg.steps * cfg.batch_size / seconds:.0f} images/s)")
    save_clip(model.cpu(), out / "model")
    summary = {"before": before, "after": after, "seconds": seconds, "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
