"""Passkey retrieval (Mohtashami & Jaggi, 2023, "Landmark Attention"): a 5-digit key hidden at a chosen depth
inside repeated filler text of a chosen token length; the model is asked for it, greedy-decodes a few tokens,
and succeeds when the first number it writes is the key. The result is an accuracy grid (lengths x depths).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.common.errors import LmforgeError

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
        "I will quiz you about the important information there.")
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"

Answer = Callable[[list[int]], str]  # prompt token ids -> the model's generated text


@dataclass(frozen=True)
class PasskeyPrompt:
    ids: list[int]
    key: str
    key_start: int  # token index where the key sentence begins
    filler_before: int  # filler repetitions before the key
    filler_total: int


def passkey_prompt(tokenizer, length: int, depth: float, key: str) -> PasskeyPrompt:
    """The longest prompt of at most `length` tokens with the key sentence after round(depth * n) of its n
    filler repetitions (depth 0: right after the task line; 1: right before the question)."""
    if not 0 <= depth <= 1:
        raise LmforgeError(f"depth must be in [0, 1], got {depth}")
    task = tokenizer.encode(TASK)  # the tokenizer's usual special tokens (BOS) go first
    filler = tokenizer.encode(FILLER, add_special_tokens=False)
    key_ids = tokenizer.encode(KEY.format(key=key), add_special_tokens=False)
    question = tokenizer.encode(QUESTION, add_special_tokens=False)
    fixed = len(task) + len(key_ids) + len(question)
    if length < fixed + len(filler):
        raise LmforgeError(f"length {length} is too short for the passkey prompt (needs >= {fixed + len(filler)} "
                           f"tokens with this tokenizer)")
    n = (length - fixed) // len(filler)
    before = round(depth * n)
    ids = task + filler * before + key_ids + filler * (n - before) + question
    return PasskeyPrompt(ids, key, len(task) + before * len(filler), before, n)


def is_correct(answer: str, key: str) -> bool:
    """Success when the first run of digits in the answer is exactly the key."""
    found = re.search(r"\d+", answer)
    return found is not None and found.group() == key


def run_passkey(answer: Answer, tokenizer, lengths: Sequence[int], depths: Sequence[float], trials: int = 3,
                seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """Accuracy[i][j] of `answer` over `trials` random keys at lengths[i] tokens and depths[j]."""
    if trials < 1 or not lengths or not depths:
        raise LmforgeError(f"need trials >= 1 and at least one length and depth, got trials={trials}, "
                           f"lengths={list(lengths)}, depths={list(depths)}")
    rng = random.Random(seed)
    accuracy, records = [], []
    for length in lengths:
        row = []
        for depth in depths:
            hits = 0
            for _ in range(trials):
                prompt = passkey_prompt(tokenizer, length, depth, str(rng.randint(10_000, 99_999)))
                text = answer(prompt.ids)
                ok = is_correct(text, prompt.key)
                hits += ok
                records.append({"length": length, "depth": depth, "tokens": len(prompt.ids), "key": prompt.key,
                                "answer": text, "correct": ok})
            row.append(hits / trials)
            if log:
                log(f"length {length:>6}  depth {depth:.2f}: {hits}/{trials}")
        accuracy.append(row)
    overall = sum(r["correct"] for r in records) / len(records)
    return {"lengths": list(lengths), "depths": list(depths), "trials": trials, "accuracy": accuracy,
            "mean_accuracy": overall, "records": records}


def model_answer(model, tokenizer, max_new_tokens: int = 8, stop_ids: Sequence[int] = ()) -> Answer:
    """An Answer that greedy-decodes `max_new_tokens` tokens with an lmforge model."""
    import torch

    from lmforge.generation.generate import greedy_completion

    def answer(ids: list[int]) -> str:
        model.eval()
        with torch.no_grad():
            new = greedy_completion(model, ids, max_new_tokens, stop_ids[:1])
        return tokenizer.decode(new, skip_special_tokens=True)

    return answer


def write_heatmap(result: dict, path: str | Path, title: str = "passkey retrieval accuracy") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc, lengths, depths = result["accuracy"], result["lengths"], result["depths"]
    fig, ax = plt.subplots(figsize=(1.2 * len(depths) + 2, 0.6 * len(lengths) + 1.6))
    image = ax.imshow(acc, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_yticks(range(len(lengths)), [str(n) for n in lengths])
    for i, row in enumerate(acc):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=9)
    ax.set(xlabel="key depth (fraction of the filler before the key)", ylabel="context length (tokens)",
           title=f"{title} ({result['trials']} trials per cell)")
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_result(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
