"""Reading a JSONL file of records: one JSON value a line, blank lines skipped, each checked by the caller; a
missing file, a line that is not JSON, a bad record or an empty file is a one-line error naming the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lmforge.common.errors import LmforgeError

T = TypeVar("T")


def read_jsonl(path: str | Path, check: Callable[[Any, str], T], what: str = "file", items: str = "records") -> list[T]:
    """check(value, "PATH:LINE") of every non-blank line, in order; check raises LmforgeError for a bad record.
    `what` names the file in the errors ("prompt file"), `items` what it holds ("prompts")."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"{what} {path} does not exist")
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as err:
                raise LmforgeError(f"{path}:{number} is not valid JSON ({err})") from None
            records.append(check(value, f"{path}:{number}"))
    if not records:
        raise LmforgeError(f"{what} {path} holds no {items}")
    return records
