"""Audit of a pipeline run: per-step documents and bytes in/out and removals by reason, merged over
shards, saved as stats.json and rendered as a markdown report with a PNG chart (the accounting FineWeb and
DCLM publish for every filtering stage).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.audit_chart import CHART_FILE, render_chart

MAX_EXAMPLES = 3  # removed documents shown per reason in the report
SNIPPET_CHARS = 160


@dataclass
class StepStats:
    """Counters of one step (over one shard, or merged over all shards)."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    removed: Counter = field(default_factory=Counter)
    modified: int = 0  # kept documents whose text the step rewrote (normalisation, PII, C4 lines)
    examples: dict = field(default_factory=dict)  # reason -> up to MAX_EXAMPLES {"id", "text"} of removed docs

    def record(self, bytes_in: int, bytes_out: int | None, reason: str | None = None,
               modified: bool = False, doc: tuple[str, str] | None = None) -> None:
        """Count one document; `doc` = (id, text) of a removed one becomes an example of its reason."""
        self.docs_in += 1
        self.modified += modified
        self.bytes_in += bytes_in
        if reason is None:
            self.docs_out += 1
            self.bytes_out += bytes_out or 0
        else:
            self.removed[reason] += 1
            if doc is not None:
                self._add_examples(reason, [{"id": doc[0], "text": " ".join(doc[1].split())[:SNIPPET_CHARS]}])

    def _add_examples(self, reason: str, examples: list[dict]) -> None:
        kept = self.examples.setdefault(reason, [])
        kept.extend(examples[: MAX_EXAMPLES - len(kept)])

    def merge(self, other: StepStats) -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.modified += other.modified
        self.removed.update(other.removed)
        for reason, examples in other.examples.items():
            self._add_examples(reason, examples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "modified": self.modified,
            "removed": dict(sorted(self.removed.items(), key=lambda kv: (-kv[1], kv[0]))),
            "examples": {r: self.examples[r] for r in sorted(self.examples)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepStats:
        return cls(data["name"], data["docs_in"], data["docs_out"], data["bytes_in"], data["bytes_out"],
                   Counter(data["removed"]), data.get("modified", 0), dict(data.get("examples", {})))


def merge_step_lists(lists: list[list[StepStats]]) -> list[StepStats]:
    """Merge per-shard step lists (same step order in every shard) into one list."""
    merged: dict[str, StepStats] = {}
    for steps in lists:
        for s in steps:
            merged.setdefault(s.name, StepStats(s.name)).merge(s)
    return list(merged.values())


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _bad_input(read: dict[str, Any]) -> list[str]:
    """Every bad file with its reason (its documents were dropped), then the first bad lines."""
    lines = [f"- bad file `{f['file']}`: {f['reason']}" for f in read.get("bad_files", [])]
    lines += [f"- {example}" for example in read.get("examples", [])]
    return ["## Bad input", "", *lines, ""] if lines else []


def render_report(stats: dict[str, Any]) -> str:
    """Markdown: reader problems, a table of steps, and the removal reasons of every step."""
    read = stats["read"]
    lines = [
        "# Data pipeline report",
        "",
        f"Input: {read['files']} files, {read['records']} documents, {_fmt_bytes(read['bytes'])}. "
        f"Skipped: {len(read.get('bad_files', []))} bad files, {read['malformed_json']} malformed JSON lines, "
        f"{read['undecodable']} undecodable lines, {read['missing_text']} records without text, "
        f"{read.get('invalid_unicode', 0)} records not Unicode (unpaired surrogates).",
        "",
        *_bad_input(read),
        "| step | docs in | docs out | kept | modified | bytes in | bytes out |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stats["steps"]:
        kept = s["docs_out"] / s["docs_in"] if s["docs_in"] else 1.0
        lines.append(f"| {s['name']} | {s['docs_in']} | {s['docs_out']} | {kept:.1%} | {s['modified']} | "
                     f"{_fmt_bytes(s['bytes_in'])} | {_fmt_bytes(s['bytes_out'])} |")
    out = stats["output"]
    lines += ["", f"Output: {out['docs']} documents, {_fmt_bytes(out['bytes'])} of text in "
              f"{out['shards']} shards.", "", "## Removals by reason", ""]
    for s in stats["steps"]:
        if s["removed"]:
            lines.append(f"- **{s['name']}**: " + ", ".join(f"{r} {n}" for r, n in s["removed"].items()))
            for reason, examples in s.get("examples", {}).items():
                lines += [f"  - {reason}, e.g. `{e['id']}`: {_quote(e['text'])}" for e in examples]
    if not any(s["removed"] for s in stats["steps"]):
        lines.append("- nothing was removed")
    lines += ["", f"![documents in and out per step, and removals by reason]({CHART_FILE})"]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A snippet safe inside a markdown list item: no backticks, pipes or HTML."""
    clean = text.replace("`", "'").replace("|", "/").replace("<", "&lt;").replace(">", "&gt;")
    return f"“{clean}…”" if len(text) >= SNIPPET_CHARS else f"“{clean}”"


def write_audit(out_dir: Path, stats: dict[str, Any]) -> None:
    """stats.json, report.md and the chart it shows (report.png) in `out_dir`."""
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    render_chart(stats, out_dir / CHART_FILE)
    (out_dir / "report.md").write_text(render_report(stats), encoding="utf-8")
