"""The report card's task set, scored the same way on every stage's model (nanochat's report card): bits per byte on
the held-out split of the pretraining corpus (against the unigram entropy of the same tokens), exact match on
held-out instructions (SFT's own check), preference accuracy on held-out pairs (DPO's win rate) and lm-eval tasks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmforge.common.device import resolve_device
from lmforge.data.corpus import unigram_entropy
from lmforge.data.pack import INDEX_FILE
from lmforge.data.tasks.instructions import instruction_split
from lmforge.data.tasks.preferences import preference_pairs
from lmforge.formats.loader import load
from lmforge.tokenizer.chat_template import CHATML_TEMPLATE
from lmforge.train.corpus_data import split_tokens
from lmforge.train.post.dpo import pair_logprobs
from lmforge.train.post.exact_match import exact_match
from lmforge.train.post.pairs import encode_pairs

MAX_NEW_TOKENS = 32  # answer length limit of the instruction exact match (SFT's default)
PAIR_MAX_LEN = 256  # tokens per prompt + answer of a preference pair (DPO's default)


def heldout_rows(data_dir: Path) -> np.ndarray:
    """[rows, seq_len + 1] token rows of the corpus's validation split (inputs row[:-1], targets row[1:])."""
    index = json.loads((data_dir / INDEX_FILE).read_text())
    parts = [np.memmap(data_dir / s["file"], dtype=index["dtype"], mode="r").reshape(s["rows"], -1)
             for s in index["splits"]["val"]["shards"]]
    return np.concatenate([np.asarray(p) for p in parts]).astype(np.int64) if parts else np.zeros((0, 2), np.int64)


def corpus_bytes(tokenizer, data_dir: Path) -> int:
    """UTF-8 bytes of the held-out targets' text (special tokens, the document separators, count as none)."""
    targets = split_tokens(data_dir, "val")
    return len(tokenizer.decode(targets.tolist(), skip_special_tokens=True).encode("utf-8"))


def unigram_scores(tokenizer, data_dir: Path) -> dict:
    """The baseline: the entropy of the held-out tokens' own frequencies (the best context-free model of them)."""
    targets = split_tokens(data_dir, "val")
    nats = unigram_entropy(targets, len(tokenizer))
    return {"loss": nats, "bpb": nats * targets.size / math.log(2) / max(corpus_bytes(tokenizer, data_dir), 1)}


@torch.no_grad()
def corpus_scores(model, tokenizer, data_dir: Path, batch_size: int = 32) -> dict:
    """Held-out loss (nats/token) and bits per byte of `model` on every row of the corpus's validation split."""
    rows = torch.from_numpy(heldout_rows(data_dir))
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        batch = rows[i:i + batch_size].to(next(model.parameters()).device)
        logits = model(batch[:, :-1]).float()
        total += float(F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum"))
        count += batch[:, 1:].numel()
    return {"loss": total / max(count, 1), "bpb": total / math.log(2) / max(corpus_bytes(tokenizer, data_dir), 1)}


def chat_tokenizer(tokenizer):
    if tokenizer.chat_template is None:  # a model that never saw a chat gets the format SFT will teach
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def instruct_scores(model, tokenizer, n: int, seed: int) -> dict:
    """Exact match of greedy answers on n held-out conversations of the embedded instruction task (as SFT's check)."""
    held = instruction_split("eval", n, seed)
    result = exact_match(model, chat_tokenizer(tokenizer), [list(e.messages) for e in held], [e.kind for e in held],
                         MAX_NEW_TOKENS)
    return {"exact_match": result["exact_match"], "by_kind": result["by_kind"], "samples": result["samples"][:3]}


def preference_scores(model, tokenizer, n: int, seed: int, pad_id: int) -> dict:
    """Share of n held-out preference pairs whose chosen answer has the higher sequence log-prob (DPO's win rate)."""
    pairs = encode_pairs(chat_tokenizer(tokenizer), preference_pairs(n, "heldout", seed), PAIR_MAX_LEN)
    chosen, rejected = pair_logprobs(model, pairs, pad_id=pad_id)
    return {"accuracy": float((chosen > rejected).float().mean())}


def task_scores(model_dir: Path, tasks: tuple[str, ...], limit: int | None, out: Path, device: str = "cpu") -> dict:
    """{"<task> <metric>": value} of lm-eval tasks on the model (0-shot), results JSON under `out`."""
    from lmforge.eval.run_tasks import run_tasks

    results = run_tasks(str(model_dir), list(tasks), limit=limit, out=out, log=lambda message: None,
                        model_args={"device": device, "kv_cache_gb": 0.05, "prepare": False})
    scores = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if "," in key and "_stderr" not in key and isinstance(value, int | float):
                metric, filt = key.split(",", 1)
                scores[f"{task} {metric}" + ("" if filt == "none" else f" ({filt})")] = float(value)
    return scores


def stage_scores(model_dir: Path, data_dir: Path, sizes: dict, seed: int, out: Path, device: str = "cpu") -> dict:
    """Every score of the card for the model in model_dir (an hf/ export of a stage), run on `device`."""
    lm = load(model_dir)
    model, tokenizer = lm.model.to(resolve_device(device)).eval(), lm.tokenizer
    pad = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    scores = {"corpus": corpus_scores(model, tokenizer, data_dir),
              "instruct": instruct_scores(model, tokenizer, sizes["eval_examples"], seed),
              "preference": preference_scores(model, tokenizer, sizes["heldout_pairs"], seed, pad)}
    if sizes["tasks"]:
        scores["tasks"] = task_scores(model_dir, tuple(sizes["tasks"]), sizes["task_limit"], out, device)
    return scores
