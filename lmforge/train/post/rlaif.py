"""RLAIF (Bai et al., 2022 "Constitutional AI"; Lee et al., 2023 "RLAIF"): preference pairs labelled by an AI judge
instead of people. K responses are sampled per prompt from a policy; a judge compares every two of them in both
orders (position swap, as MT-Bench's pairwise judge); a verdict counts only when both orders agree, so position-biased
or inconsistent judgements are dropped; each consistent win is a (chosen, rejected) pair `lmforge dpo` reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from itertools import combinations
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.common.jsonl import read_jsonl
from lmforge.train.post.rollout import GenerateFn, RolloutParams

# compare([(question, answer_a, answer_b), ...]) -> one verdict per item: "A", "B", "C" (tie) or None (unparsed)
Compare = Callable[[list[tuple[str, str, str]]], list[str | None]]


def read_prompts(path: str | Path) -> list[dict]:
    """{"prompt": str, "responses"?: [str, ...]} per line; with responses, they are judged instead of sampled."""
    return read_jsonl(path, _prompt_record, what="--prompts", items="prompts")


def _prompt_record(row, where: str) -> dict:
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        raise LmforgeError(f"{where}: needs a non-empty string field \"prompt\"")
    responses = row.get("responses")
    if responses is not None and (not isinstance(responses, list) or not all(isinstance(r, str) for r in responses)):
        raise LmforgeError(f"{where}: \"responses\" must be a list of strings")
    return {"prompt": row["prompt"], "responses": responses}


def sample_responses(tokenizer, generate_fn: GenerateFn, prompts: Sequence[str], k: int,
                     params: RolloutParams) -> list[list[str]]:
    """k sampled answers per prompt (the chat template's user turn; row i of the batch samples with seed + i)."""
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True)
           for p in prompts for _ in range(k)]
    out = generate_fn(ids, params)
    texts = [tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]
    return [texts[i * k:(i + 1) * k] for i in range(len(prompts))]


def judge_pairs(compare: Compare, prompts: Sequence[str], responses: Sequence[Sequence[str]]) -> tuple[list[dict],
                                                                                                        dict]:
    """(pairs, stats): every two distinct responses of a prompt asked in both orders; (chosen, rejected) when the
    verdicts agree (A then B, or B then A), nothing on a tie, a missing verdict or a position-inconsistent one."""
    items, index = [], []
    for p, (prompt, answers) in enumerate(zip(prompts, responses, strict=True)):
        distinct = list(dict.fromkeys(a for a in answers if a.strip()))
        for i, j in combinations(range(len(distinct)), 2):
            items += [(prompt, distinct[i], distinct[j]), (prompt, distinct[j], distinct[i])]
            index.append((p, distinct[i], distinct[j]))
    verdicts = compare(items) if items else []
    if len(verdicts) != len(items):
        raise LmforgeError(f"the judge answered {len(verdicts)} of {len(items)} comparisons")
    pairs, stats = [], {"comparisons": len(index), "consistent": 0, "inconsistent": 0, "ties": 0, "unparsed": 0}
    for n, (p, first, second) in enumerate(index):
        v1, v2 = verdicts[2 * n], verdicts[2 * n + 1]  # v1: first shown as A; v2: first shown as B
        if v1 is None or v2 is None:
            stats["unparsed"] += 1
        elif v1 == "C" and v2 == "C":
            stats["ties"] += 1
        elif (v1, v2) in (("A", "B"), ("B", "A")):
            stats["consistent"] += 1
            chosen, rejected = (first, second) if v1 == "A" else (second, first)
            pairs.append({"prompt": prompts[p], "chosen": chosen, "rejected": rejected})
        else:
            stats["inconsistent"] += 1
    letters = [v for v in verdicts if v is not None]
    stats["position_bias"] = (letters.count("A") - letters.count("B")) / max(len(letters), 1)
    stats["pairs"] = len(pairs)
    return pairs, stats


def write_pairs(pairs: Sequence[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    return path
