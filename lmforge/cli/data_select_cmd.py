"""`lmforge data select IN.jsonl --out OUT.jsonl --by METHOD --keep 0.3`: keep the best share of an SFT data file by
reward-model score, by perplexity under a model, by K-Center-Greedy coverage of sentence embeddings, or by DEITA's
quality x diversity; `random` is the baseline. The kept records are written unchanged, in input order.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import typer

from lmforge.cli import sampling_options as opt
from lmforge.cli.device_option import DEVICE, pick_device, place
from lmforge.common.errors import LmforgeError
from lmforge.common.threads import set_threads

METHODS = ("reward", "perplexity", "kcenter", "quality-diversity", "random")


def _text(messages: list[dict], roles: bool = False) -> str:
    """What is embedded (every turn's content, one per line; the embedder cuts it to its window), or with roles
    what --dedup compares."""
    return "\n".join(f"{m['role']}: {m['content']}" if roles else m["content"] for m in messages)


def _check(by: str, keep: float, model: str | None, reward_model: Path | None, embedder: str | None) -> None:
    if by not in METHODS:
        raise LmforgeError(f"--by {by!r} is not a selection method; allowed: {', '.join(METHODS)}")
    if keep <= 0 or (keep > 1 and keep != int(keep)):
        raise LmforgeError(f"--keep {keep:g} must be a fraction in (0, 1] or a whole number of rows >= 1")
    if by == "reward" and reward_model is None:
        raise LmforgeError("--by reward needs --reward-model DIR (a reward model trained with `lmforge rm`)")
    if by == "perplexity" and model is None:
        raise LmforgeError("--by perplexity needs --model (the language model that scores the answers)")
    if by == "kcenter" and model is None and embedder is None:
        raise LmforgeError("--by kcenter needs --embedder (e.g. all-minilm-l6-v2) or --model (mean-pooled states)")
    if by == "quality-diversity" and model is None and (reward_model is None or embedder is None):
        raise LmforgeError("--by quality-diversity needs --model (the perplexity quality unless --reward-model is "
                           "given, the embeddings unless --embedder is given)")


class _Bar:
    """A rich progress bar on stderr (silent with --quiet) that the scoring loops advance."""

    def __init__(self, quiet: bool):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), disable=quiet)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def task(self, label: str, total: int):
        task = self.progress.add_task(label, total=total)
        return lambda done: self.progress.update(task, completed=done)


def select(
    input: Path = typer.Argument(..., help="Chat data file: messages JSONL, Alpaca or ShareGPT (JSON lines or a JSON "
                                 "array).", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Where the kept records go (JSON lines, unchanged, input "
                             "order).", show_default=False),
    by: str = typer.Option(..., "--by", help="reward: highest reward-model score | perplexity: LOWEST perplexity of "
                           "the answers under --model (a model that learned the task finds wrong, cut or garbled "
                           "answers unlikely; the highest would pick exactly those) | kcenter: K-Center-Greedy, the "
                           "rows that cover the embedding space | quality-diversity: DEITA, best quality first, "
                           "skipping near neighbours of kept rows | random: the baseline.", show_default=False),
    keep: float = typer.Option(0.3, "--keep", help="Share of rows kept (0, 1], or a number of rows (> 1)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Language model for perplexity, and whose "
                                     "mean-pooled states embed the rows unless --embedder is given.",
                                     show_default=False),
    reward_model: Path | None = typer.Option(None, "--reward-model", help="Reward model directory (`lmforge rm`): "
                                             "--by reward, and the quality of quality-diversity.", show_default=False),
    embedder: str | None = typer.Option(None, "--embedder", help="Sentence embedder for kcenter and "
                                        "quality-diversity: all-minilm-l6-v2, a sentence-transformers dir or any "
                                        "lmforge model. Default: --model, mean-pooled.", show_default=False),
    max_similarity: float = typer.Option(0.9, "--max-similarity", help="quality-diversity: a row whose cosine "
                                         "similarity to a kept row exceeds this is skipped."),
    dedup: bool = typer.Option(False, "--dedup", help="Drop exact copies of a conversation (same turns after "
                               "Unicode NFKC and whitespace collapsing; case kept) before selecting: a copy adds "
                               "nothing but takes a place. The budget stays --keep of the input's rows."),
    strata: int = typer.Option(0, "--strata", min=0, help="reward, perplexity, quality-diversity: k-means the "
                               "embeddings into this many clusters and keep the same share of each, ranked inside it "
                               "(a pool-wide ranking drifts to the easiest kind of row). 0: off."),
    max_len: int = typer.Option(512, "--max-len", min=2, help="Tokens of a conversation scored by perplexity."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Rows per forward pass."),
    format: str = typer.Option("auto", "--format", help="auto | messages | alpaca | sharegpt."),
    seed: int = typer.Option(0, "--seed", help="Seed of --by random."),
    scores: Path | None = typer.Option(None, "--scores", help="Also write every row's score and whether it was "
                                       "kept (JSON lines).", show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    dtype: str = opt.DTYPE,
    threads: int = opt.THREADS,
    device: str = DEVICE,
) -> None:
    """Select the best share of SFT data (deterministic); prints what was kept and the score range."""
    _check(by, keep, model, reward_model, embedder)
    if strata and (by in ("kcenter", "random") or (model is None and embedder is None)):
        raise LmforgeError("--strata clusters the embeddings for reward, perplexity or quality-diversity: it needs "
                           "--embedder or --model" if by not in ("kcenter", "random") else
                           f"--strata does not apply to --by {by}; it ranks reward, perplexity or quality-diversity "
                           f"inside clusters")
    set_threads(threads)
    where = pick_device(device, dtype)
    import numpy as np

    from lmforge.data.select import (
        first_copies,
        k_center_greedy,
        keep_count,
        kmeans,
        quality_diversity,
        random_k,
        stratified,
        top_k,
    )
    from lmforge.train.post.sft_data import read_chat_records

    records = read_chat_records(input, format)  # data mistakes surface before any model loads
    k = keep_count(len(records), keep)  # the budget is a share of the input, copies included
    pool, copies, note = np.arange(len(records)), {}, ""
    if dedup:
        pool, copies = first_copies([_text(c, roles=True) for _, c in records])
        note = f"; {len(copies)} exact copies dropped first"
        if len(pool) < k:
            note += f" (only {len(pool)} distinct rows: fewer than the {k} asked)"
    convs = [records[i][1] for i in pool]
    k = min(k, len(pool))
    values = None
    with _Bar(quiet) as bar:
        if by in ("reward", "quality-diversity") and reward_model is not None:
            from lmforge.train.post.reward_model import load_reward_model
            from lmforge.train.post.select_scores import reward_scores

            rm = load_reward_model(reward_model, dtype=dtype)
            rm.head.to(where)
            values = reward_scores(rm, convs, batch_size, bar.task("reward", len(convs)))
        elif by in ("perplexity", "quality-diversity"):
            values = _perplexities(model, convs, max_len, batch_size, dtype, where, bar.task("perplexity", len(convs)))
        if by in ("kcenter", "quality-diversity") or strata:
            vectors = _embed(embedder or model, convs, batch_size, dtype, where, bar.task("embed", len(convs)))
        quality = None if values is None else np.array(values if reward_model is not None else [-v for v in values])
        filled = []

        def pick(rows: np.ndarray, n: int) -> np.ndarray:
            if by != "quality-diversity":
                return top_k(quality[rows], n)
            chosen, fill = quality_diversity(quality[rows], vectors[rows], n, max_similarity)
            filled.append(fill)
            return chosen

        if by == "kcenter":
            chosen = k_center_greedy(vectors, k, bar.task("k-center", k - 1))
        elif by == "random":
            chosen = random_k(len(pool), k, seed)
        elif strata:
            chosen = stratified(kmeans(vectors, strata, seed), k, pick)
            note += f"; {strata} strata"
        else:
            chosen = pick(np.arange(len(pool)), k)
        if sum(filled):
            note += f"; {sum(filled)} near-duplicate rows filled the budget"
    kept = sorted(int(pool[i]) for i in chosen)  # row numbers of the input
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(records[i][0], ensure_ascii=False) + "\n" for i in kept))
    if scores is not None:
        _write_scores(scores, values, pool, copies, set(kept))
    print(f"kept {len(kept)} of {len(records)} rows of {input} by {by}"
          f"{_score_note(by, values, sorted(int(i) for i in chosen), reward_model)}{note}; wrote {out}")


def _perplexities(model: str, convs, max_len: int, batch_size: int, dtype: str, device, progress) -> list[float]:
    from lmforge.formats.loader import load
    from lmforge.train.post.select_scores import answer_perplexities

    lm = place(load(model, dtype=dtype), device)
    if lm.tokenizer is None or lm.tokenizer.chat_template is None:
        raise LmforgeError(f"--model {model} needs a tokenizer with a chat template to score conversations")
    return answer_perplexities(lm.model, lm.tokenizer, convs, max_len, batch_size, progress)


def _embed(name: str, convs, batch_size: int, dtype: str, device, progress):
    import torch

    from lmforge.rag.embedder import load_embedder

    embedder = load_embedder(name, dtype=dtype, device=device)
    texts = [_text(c) for c in convs]
    parts = []
    for start in range(0, len(texts), batch_size * 8):
        parts.append(embedder.embed(texts[start:start + batch_size * 8], batch_size=batch_size))
        progress(start + len(parts[-1]))
    return torch.cat(parts).numpy()


def _score_note(by: str, values, kept: list[int], reward_model) -> str:
    if values is None:
        return ""
    name = "reward" if reward_model is not None else "perplexity"
    chosen = [values[i] for i in kept]
    return (f" ({name} of kept rows {min(chosen):.3g}..{max(chosen):.3g}, all rows {min(values):.3g}.."
            f"{max(values):.3g})")


def _write_scores(path: Path, values, pool, copies: dict[int, int], kept: set[int]) -> None:
    """One line per input row: its score (None for inf / nan, and for a copy --dedup dropped: copy_of its first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scored = {int(row): v for row, v in zip(pool, values, strict=True)} if values is not None else {}
    with path.open("w") as f:
        for i in range(len(scored) + len(copies) if values is not None else 0):
            if i in copies:
                f.write(json.dumps({"row": i, "score": None, "kept": False, "copy_of": copies[i]}) + "\n")
                continue
            score = scored[i] if math.isfinite(scored[i]) else None  # JSON has no inf
            f.write(json.dumps({"row": i, "score": score, "kept": i in kept}) + "\n")
    if values is None:
        print(f"note: --by gives no per-row score; {path} is empty", file=sys.stderr)
