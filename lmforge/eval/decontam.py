"""Decontamination: which eval items share a word n-gram (13 by default, as GPT-3 "Language Models are Few-Shot
Learners" App. C and the Llama reports) with the training data. Text is normalised as they do (lower case, punctuation
dropped, whitespace collapsed; each CJK character is one word); items shorter than n words are checked whole.
The eval n-grams are indexed (small), the training data streamed past them (large): text, JSONL or token shards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmforge.common.errors import LmforgeError

DEFAULT_N = 13
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")


def normalize_words(text: str) -> list[str]:
    """Lower-cased words without punctuation; each CJK character is its own word."""
    return _WORD.findall(text.lower())


def item_text(item: object, fields: tuple[str, ...] = ()) -> str:
    """The text of one eval item: the given fields, or every string (also inside lists / dicts) it holds."""
    if isinstance(item, dict):
        if fields:
            missing = [f for f in fields if f not in item]
            if missing:
                raise LmforgeError(f"field {missing[0]!r} is absent from an item; it has {sorted(item)}")
            item = {f: item[f] for f in fields}
        return "\n".join(item_text(v) for v in item.values())
    if isinstance(item, list):
        return "\n".join(item_text(v) for v in item)
    return item if isinstance(item, str) else ""


@dataclass
class TaskItems:
    name: str
    lines: list[str]  # the original JSONL lines, to write a clean copy
    words: list[list[str]]


def read_task(path: Path, fields: tuple[str, ...] = ()) -> TaskItems:
    """One JSONL task file: one item per line (blank lines skipped)."""
    if not path.is_file():
        raise LmforgeError(f"task file {str(path)!r} does not exist")
    lines, words = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise LmforgeError(f"{path}:{number} is not valid JSON ({err.msg})") from None
        lines.append(line)
        words.append(normalize_words(item_text(item, fields)))
    return TaskItems(path.stem, lines, words)


@dataclass
class NgramIndex:
    """Eval n-grams (as tuples of word ids) -> the (task, item) pairs that hold them."""

    n: int
    vocab: dict[str, int] = field(default_factory=dict)
    grams: dict[tuple[int, ...], list[tuple[int, int]]] = field(default_factory=dict)
    lengths: set[int] = field(default_factory=set)

    def add(self, task: int, item: int, words: list[str]) -> int:
        """Index an item; returns how many distinct n-grams it has (one, the whole item, when shorter than n)."""
        if not words:
            return 0
        ids = [self.vocab.setdefault(w, len(self.vocab)) for w in words]
        size = min(self.n, len(ids))
        self.lengths.add(size)
        keys = {tuple(ids[i:i + size]) for i in range(len(ids) - size + 1)}
        for key in keys:
            self.grams.setdefault(key, []).append((task, item))
        return len(keys)

    def matches(self, words: list[str]) -> Iterator[tuple[tuple[int, ...], list[tuple[int, int]]]]:
        """(n-gram, items) for every indexed n-gram in a training document's words."""
        ids = [self.vocab.get(w, -1) for w in words]
        run: list[int] = []
        for i in [*ids, -1]:  # a word no eval item has breaks every n-gram across it
            if i >= 0:
                run.append(i)
                continue
            for size in self.lengths:
                for start in range(len(run) - size + 1):
                    key = tuple(run[start:start + size])
                    hit = self.grams.get(key)
                    if hit is not None:
                        yield key, hit
            run = []


def _jsonl_texts(path: Path, text_field: str) -> Iterator[str]:
    for number, line in enumerate(path.open(encoding="utf-8"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise LmforgeError(f"{path}:{number} is not valid JSON ({err.msg})") from None
        yield row.get(text_field, "") if isinstance(row, dict) and text_field in row else item_text(row)


def shard_documents(directory: Path, tokenizer) -> Iterator[str]:
    """Documents of an lmforge packed-token directory (lmforge data pack), decoded: rows are re-joined into the
    token stream (consecutive rows share one token) and cut at EOS."""
    from lmforge.data.pack import INDEX_FILE, SPLITS  # lazy: numpy-only module, keeps import light

    if tokenizer is None:
        raise LmforgeError(f"{str(directory)!r} holds token shards: give --tokenizer (the one they were packed with)")
    index = json.loads((directory / INDEX_FILE).read_text())
    if tokenizer.vocab_size > index.get("vocab_size", tokenizer.vocab_size):
        raise LmforgeError(f"--tokenizer has {tokenizer.vocab_size} tokens but {directory} was packed with "
                           f"{index['vocab_size']}; give the tokenizer it was packed with")
    eos, dtype, row_len = index.get("eos_id"), np.dtype(index["dtype"]), index["row_len"]
    for split in SPLITS:
        pieces: list[np.ndarray] = []
        for shard in index["splits"][split]["shards"]:
            rows = np.fromfile(directory / shard["file"], dtype=dtype).reshape(shard["rows"], row_len)
            pieces.append(rows[:, 1:].reshape(-1) if pieces else np.concatenate([rows[0, :1], rows[:, 1:].ravel()]))
        stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
        cuts = np.flatnonzero(stream == eos) if eos is not None else np.zeros(0, dtype=np.int64)
        for doc in np.split(stream, cuts + 1):
            if len(doc):
                yield tokenizer.decode(doc.tolist(), skip_special_tokens=True)


def training_documents(paths: Iterable[Path], tokenizer=None, text_field: str = "text") -> Iterator[str]:
    """Documents from .txt files (a whole file is one document), .jsonl files (`text_field`, else every string),
    lmforge token-shard directories (with index.json), or directories of those."""
    for path in paths:
        if path.is_dir() and (path / "index.json").is_file():
            yield from shard_documents(path, tokenizer)
        elif path.is_dir():
            yield from training_documents(sorted(p for p in path.iterdir() if p.is_dir() or p.suffix in
                                                 (".txt", ".jsonl", ".md")), tokenizer, text_field)
        elif not path.is_file():
            raise LmforgeError(f"training data {str(path)!r} does not exist")
        elif path.suffix == ".jsonl":
            yield from _jsonl_texts(path, text_field)
        else:
            yield path.read_text(encoding="utf-8", errors="replace")


def decontaminate(tasks: list[TaskItems], documents: Iterable[str], n: int = DEFAULT_N) -> dict:
    """Per task: items, contaminated items (any n-gram seen in training) with the share of their n-grams seen."""
    if n < 1:
        raise LmforgeError(f"n={n} must be >= 1 (13 is the GPT-3 / Llama choice)")
    index = NgramIndex(n)
    totals = [[index.add(t, i, words) for i, words in enumerate(task.words)] for t, task in enumerate(tasks)]
    seen: dict[tuple[int, int], set[tuple[int, ...]]] = {}
    docs = 0
    for doc in documents:
        docs += 1
        for key, items in index.matches(normalize_words(doc)):
            for item in items:
                seen.setdefault(item, set()).add(key)
    report = {"n": n, "training_documents": docs, "tasks": {}}
    for t, task in enumerate(tasks):
        hits = {i: len(seen[(t, i)]) / totals[t][i] for i in range(len(task.lines)) if (t, i) in seen}
        report["tasks"][task.name] = {
            "items": len(task.lines), "contaminated": len(hits),
            "rate": len(hits) / len(task.lines) if task.lines else 0.0,
            "contaminated_items": [{"index": i, "overlap": round(share, 4)} for i, share in sorted(hits.items())]}
    return report


def write_clean(tasks: list[TaskItems], report: dict, out_dir: Path) -> list[Path]:
    """Each task's JSONL without its contaminated items, as OUT_DIR/<task>.jsonl."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in tasks:
        drop = {row["index"] for row in report["tasks"][task.name]["contaminated_items"]}
        path = out_dir / f"{task.name}.jsonl"
        path.write_text("".join(line + "\n" for i, line in enumerate(task.lines) if i not in drop), encoding="utf-8")
        written.append(path)
    return written
