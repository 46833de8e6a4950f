"""Safety-alignment pairs for DPO (Rafailov et al. 2023) from a red-team run on the probe set's TRAIN split: for an
unsafe prompt a refusal is chosen over compliance (the model's own answer where it complied, else a written
"Sure, ..." opening); for a safe prompt (a benign look-alike, or a harmless request in a jailbreak template) the
model's own helpful answer is chosen over a refusal, so DPO learns what to refuse, not to refuse (over-refusal).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from lmforge.common.errors import LmforgeError
from lmforge.safety.probe_split import in_split, intent_text
from lmforge.safety.probes import Probe

REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I'm sorry, but I can't help with that request. It could cause real harm to people.",
    "I can't help with this. If you have another question, I'm happy to help.",
    "I'm sorry, I won't provide that. It could be used to hurt someone.",
)
REFUSALS_CHINESE = ("抱歉，我不能帮助你做这件事。", "对不起，我无法提供这方面的帮助。")
REFUSAL_SELF_HARM = ("I'm really sorry you're feeling this way, but I can't help with that. You don't have to go "
                     "through this alone: please talk to someone you trust or call a local crisis line.")
SENTENCE_ENDS = (". ", ".\n", "! ", "!\n", "? ", "?\n", "。", "！", "？", "\n\n")


def refusal_for(probe_id: str, category: str, technique: str) -> str:
    """A refusal in the prompt's language (Chinese for the Chinese template), supportive for self-harm."""
    if technique == "chinese":
        return REFUSALS_CHINESE[zlib.crc32(probe_id.encode()) % len(REFUSALS_CHINESE)]
    if category == "self-harm":
        return REFUSAL_SELF_HARM
    return REFUSALS[zlib.crc32(probe_id.encode()) % len(REFUSALS)]


def compliance_for(probe: Probe) -> str:
    """A complying opening, the rejected answer where the model already refused."""
    return f"Sure, here you go. How to {intent_text(probe).removeprefix('explain ')}:\n\nStep 1:"


def whole_sentences(answer: str, finish_reason: str | None) -> str:
    """An answer cut by max_tokens loses its unfinished last sentence (DPO would teach stopping mid-sentence)."""
    answer = answer.strip()
    if finish_reason != "length":
        return answer
    cut = max(answer.rfind(end) + len(end.rstrip()) for end in SENTENCE_ENDS)
    return answer[:cut].strip() if cut >= len(answer) // 3 else answer


def _probe(row: dict) -> Probe:
    return Probe(row["id"], row["category"], row["technique"], row["prompt"], ())


def build_pairs(rows: list[dict]) -> list[dict]:
    """{prompt, chosen, rejected, kind, id} records from red-team result rows (the report's "results"): kind
    "refuse" for the train split's attack probes, "help" for its benign and helpful prompts answered without a
    refusal. Rows of held-out probes are never used, whatever the caller passes."""
    pairs = []
    for row in rows:
        probe = _probe(row)
        if probe.category != "helpful" and not in_split(probe, "train"):
            continue
        refusal = refusal_for(probe.id, probe.category, probe.technique)
        if probe.category in ("benign", "helpful"):
            answer = whole_sentences(row["answer"], row.get("finish_reason"))
            if row["refused"] or not answer:
                continue  # no helpful answer to prefer
            pairs.append({"prompt": probe.prompt, "chosen": answer, "rejected": refusal, "kind": "help",
                          "id": probe.id})
        else:
            complied = not row["refused"] and row["answer"].strip()
            rejected = row["answer"].strip() if complied else compliance_for(probe)
            pairs.append({"prompt": probe.prompt, "chosen": refusal, "rejected": rejected, "kind": "refuse",
                          "id": probe.id})
    return pairs


def write_pairs(pairs: list[dict], path: Path) -> Path:
    if not pairs:
        raise LmforgeError(f"no DPO pairs to write to {path}: every answer was a refusal or from the held-out split")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    return path
