"""What the reward model and the DPO family train on: preference pairs from a user's JSONL file or the embedded
generator, a train / held-out split, tokenized once; plus the epoch-shuffled mini-batch order and the learning
rate of each step (warmup then cosine) shared by both loops.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.tasks.preferences import preference_pairs, read_preference_jsonl, split_pairs
from lmforge.data.validate import in_range
from lmforge.train.post.pairs import EncodedPair, encode_pairs
from lmforge.train.schedule import lr_at


def load_preference_data(tokenizer, data: str | None, train_pairs: int, heldout_pairs: int, task_seed: int,
                         max_len: int) -> tuple[list, list, list[EncodedPair], list[EncodedPair]]:
    """(train pairs, held-out pairs, their encodings): `data` is a JSONL file (split 80/20 by a hash of each
    pair, then capped at the requested counts), or None for the embedded preference task."""
    if tokenizer is None or tokenizer.chat_template is None:
        raise LmforgeError("preference training needs a tokenizer with a chat template (the model directory's "
                           "tokenizer.json and tokenizer_config.json)")
    if data is None:
        train = preference_pairs(train_pairs, "train", task_seed)
        heldout = preference_pairs(heldout_pairs, "heldout", task_seed)
    else:
        train, heldout = split_pairs(read_preference_jsonl(data))
        train, heldout = train[:train_pairs], heldout[:heldout_pairs]
    return train, heldout, encode_pairs(tokenizer, train, max_len), encode_pairs(tokenizer, heldout, max_len)


def batch_order(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless mini-batches of indices: each epoch a fresh permutation (seeded), the last partial batch dropped
    unless the data is smaller than one batch."""
    if n == 0:
        raise LmforgeError("no training pairs")
    rng = random.Random(seed)
    size = min(batch_size, n)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for i in range(0, n - size + 1, size):
            yield order[i:i + size]


def set_lr(optimizer: torch.optim.Optimizer, step: int, peak: float, max_steps: int, warmup_steps: int) -> float:
    lr = lr_at(step, peak=peak, max_steps=max_steps, warmup_steps=warmup_steps, schedule="cosine")
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def check_pair_run(cfg) -> None:
    """Validate the fields every preference-pair run (reward model, DPO family) shares, naming the bad one."""
    if not cfg.model:
        raise ConfigError("model must name a model (an HF directory, a .gguf file or smollm2-135m)")
    for name in ("train_pairs", "heldout_pairs", "max_steps", "batch_size", "eval_every"):
        in_range(name, getattr(cfg, name), 1)
    in_range("max_len", cfg.max_len, 8)
    in_range("lr", cfg.lr, 0)
    in_range("warmup_steps", cfg.warmup_steps, 0)
    in_range("weight_decay", cfg.weight_decay, 0)
    in_range("grad_clip", cfg.grad_clip, 0)
    if cfg.threads is not None:
        in_range("threads", cfg.threads, 1)
