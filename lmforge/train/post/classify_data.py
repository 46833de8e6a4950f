"""What a classifier trains on: labelled JSONL ({"text", "label"} for sequences; {"tokens", "tags"} for tokens, as
CoNLL-style NER sets are written), its label set, tokenization (a word's tag goes on its first sub-token, the
others are ignored, as transformers' token-classification recipe does), batches and the metrics (accuracy;
entity-level precision / recall / F1 over BIO spans, as seqeval scores CoNLL-2003).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.common.jsonl import read_jsonl

IGNORE = -100  # a position without a label (padding, special tokens, a word's later sub-tokens)


def read_labelled(path: str | Path, task: str, need_labels: bool = True) -> list[dict]:
    """Records of a JSONL file for `task`; a bad line is a one-line error naming it. need_labels=False reads
    inputs to predict (text, or tokens; a token task also takes text, split on whitespace)."""
    return read_jsonl(path, lambda record, where: _check(record, task, need_labels, where), "data file", "examples")


def _check(record: object, task: str, need_labels: bool, where: str) -> dict:
    if not isinstance(record, dict):
        raise LmforgeError(f"{where} must be a JSON object")
    if task == "sequence":
        if not isinstance(record.get("text"), str) or not record["text"]:
            raise LmforgeError(f"{where} needs a non-empty \"text\" string")
        if need_labels and not isinstance(record.get("label"), str | int):
            raise LmforgeError(f"{where} needs a \"label\" (a string or an integer)")
        return record
    if not need_labels and isinstance(record.get("text"), str) and "tokens" not in record:
        record = {**record, "tokens": record["text"].split()}
    tokens = record.get("tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
        raise LmforgeError(f"{where} needs \"tokens\": a non-empty list of words")
    if need_labels:
        tags = record.get("tags")
        if not isinstance(tags, list) or len(tags) != len(tokens) or not all(isinstance(t, str) for t in tags):
            raise LmforgeError(f"{where} needs \"tags\": one string per word ({len(tokens)} words)")
    return record


def split_heldout(records: list[dict], every: int = 5) -> tuple[list[dict], list[dict]]:
    """(train, held-out): a record is held out by a stable hash of its line, about 1 in `every`."""
    held = [random.Random(json.dumps(r, sort_keys=True)).randrange(every) == 0 for r in records]
    train = [r for r, h in zip(records, held, strict=True) if not h]
    return train, [r for r, h in zip(records, held, strict=True) if h]


def label_set(records: Sequence[dict], task: str) -> list[str]:
    """The labels in the data, sorted ("O" first for tags)."""
    found = {str(r["label"]) for r in records} if task == "sequence" else {t for r in records for t in r["tags"]}
    return sorted(found, key=lambda label: (label != "O", label))


@dataclass
class Encoded:
    ids: list[int]
    labels: list[int]  # sequence: one id; token: one per position (IGNORE where unlabelled)
    word_starts: list[int]  # token task: the position of each word's first sub-token kept (truncation)


def encode(tokenizer, record: dict, task: str, label_ids: dict[str, int] | None, max_len: int) -> Encoded:
    """Token ids (special tokens included, cut at max_len) and label ids of one record (None: unlabelled)."""
    if task == "sequence":
        ids = tokenizer.encode(record["text"], add_special_tokens=True)[:max_len]
        if not ids:
            raise LmforgeError(f"the text {record['text']!r:.60} gives no tokens")
        label = [label_ids[str(record["label"])]] if label_ids is not None else []
        return Encoded(ids, label, [])
    words = record["tokens"]
    encoding = tokenizer.backend.encode([w if i == 0 else " " + w for i, w in enumerate(words)],
                                        is_pretokenized=True, add_special_tokens=True)
    ids, word_ids = encoding.ids[:max_len], encoding.word_ids[:max_len]
    labels, starts, previous = [IGNORE] * len(ids), [], None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            starts.append(position)
            if label_ids is not None:
                labels[position] = label_ids[record["tags"][word]]
        previous = word
    return Encoded(ids, labels, starts)


def collate(rows: Sequence[Encoded], pad_id: int, task: str,
            device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids [B, T], attention_mask [B, T], labels [B] or [B, T]) right-padded, built on the CPU and moved to
    `device` (the model's)."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row.ids)] = torch.tensor(row.ids)
        mask[i, :len(row.ids)] = 1
        if task == "token" and row.labels:
            labels[i, :len(row.labels)] = torch.tensor(row.labels)
    if task == "sequence":
        labels = torch.tensor([r.labels[0] if r.labels else IGNORE for r in rows], dtype=torch.long)
    return ids.to(device), mask.to(device), labels.to(device)


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """{(type, start, end)} of the BIO tags (an I- that does not continue its type starts an entity, as conlleval
    reads it)."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-")
        continues = prefix == "I" and kind == name and start is not None
        if start is not None and not continues:
            spans.add((kind, start, i))
            start = kind = None
        if prefix in ("B", "I") and not continues:
            start, kind = i, name
    return spans


def entity_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 of exact entity spans over sentences."""
    true_positive = n_gold = n_pred = 0
    for g, p in zip(gold, predicted, strict=True):
        gold_spans, pred_spans = entity_spans(g), entity_spans(p)
        true_positive += len(gold_spans & pred_spans)
        n_gold, n_pred = n_gold + len(gold_spans), n_pred + len(pred_spans)
    precision = true_positive / n_pred if n_pred else 0.0
    recall = true_positive / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
