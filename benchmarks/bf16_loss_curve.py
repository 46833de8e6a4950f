"""bf16 vs fp32 loss curves: lmforge's Transformer trained from the same initialisation on the same batches of a
synthetic bigram language (each token has 4 possible successors: the loss falls from ln(vocab) towards ln 4), once
in fp32 and once in bf16 (bf16 weights, fp32 masters, chunked cross-entropy: the Trainer's path), plus an fp32 run
from another initialisation as the scale of run-to-run noise. Prints one JSON line with the three curves.
Usage: python benchmarks/bf16_loss_curve.py [--steps 200]
"""

import argparse
import json

import torch

from lmforge.model import Transformer, get_preset
from lmforge.train.master_weights import MasterWeights
from lmforge.train.optim import build_optimizer
from lmforge.train.schedule import lr_at
from lmforge.train.step import accumulate_gradients, optimizer_step


def bigram_batches(vocab: int, batch: int, seq: int, steps: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """`steps` batches (x, y) of a random bigram chain with 4 successors per token (probabilities .4 .3 .2 .1)."""
    g = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, vocab, (vocab, 4), generator=g)
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    out = []
    for _ in range(steps):
        ids = torch.empty(batch, seq + 1, dtype=torch.long)
        ids[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
        for t in range(seq):
            pick = torch.multinomial(probs, batch, replacement=True, generator=g)
            ids[:, t + 1] = successors[ids[:, t], pick]
        out.append((ids[:, :-1], ids[:, 1:]))
    return out


def curve(cfg, batches, precision: str, init_seed: int, lr: float) -> list[float]:
    torch.manual_seed(init_seed)
    model = Transformer(cfg)
    masters = MasterWeights(model) if precision == "bf16" else None
    opt = build_optimizer(model, lr=lr, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8, masters=masters)
    losses = []
    for step, batch in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, peak=lr, max_steps=len(batches), warmup_steps=len(batches) // 10,
                                schedule="cosine", min_ratio=0.1, decay_fraction=0.2)
        loss, tokens = accumulate_gradients(model, [batch])
        optimizer_step(model, opt, loss, tokens, grad_clip=1.0)
        losses.append(loss)
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--every", type=int, default=20, help="report the mean loss of each window of this many steps")
    args = parser.parse_args()
    cfg = get_preset("tiny-llama", dim=args.dim, n_layers=args.layers, n_heads=4, n_kv_heads=2, ffn_dim=4 * args.dim,
                     vocab_size=args.vocab, max_seq_len=args.seq)
    batches = bigram_batches(args.vocab, args.batch, args.seq, args.steps)
    runs = {"fp32": curve(cfg, batches, "fp32", 0, args.lr), "bf16": curve(cfg, batches, "bf16", 0, args.lr),
            "fp32_other_init": curve(cfg, batches, "fp32", 1, args.lr)}
    windows = {name: [round(sum(c[i:i + args.every]) / len(c[i:i + args.every]), 4)
                      for i in range(0, len(c), args.every)] for name, c in runs.items()}

    def gap(a: str, b: str) -> float:
        return round(max(abs(x - y) for x, y in zip(windows[a], windows[b], strict=True)), 4)

    print(json.dumps({"steps": args.steps, "window": args.every, "curves": windows,
                      "max_window_gap_bf16_vs_fp32": gap("bf16", "fp32"),
                      "max_window_gap_fp32_other_init_vs_fp32": gap("fp32_other_init", "fp32"),
                      "final_window": {name: w[-1] for name, w in windows.items()}}))


if __name__ == "__main__":
    main()
