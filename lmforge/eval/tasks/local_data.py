"""lm-eval `custom_dataset` for the project's task files: JSON-lines files named relative to this directory (or
absolute), read into one `datasets.Dataset` per split. Nothing is downloaded or cached."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{n}: not a JSON line ({err.msg})") from None
    return rows


def load(data_files: dict[str, str], **_metadata):
    """{split: Dataset} from {split: JSONL path}; lm-eval passes the task's metadata too (ignored)."""
    import datasets

    return {split: datasets.Dataset.from_list(read_jsonl(HERE / path)) for split, path in data_files.items()}
