"""Runs a data pipeline shard by shard, as datatrove does: per-document steps stream through each shard;
a global step (exact or MinHash dedup) starts a new stage that first scans the whole previous stage.
Finished shards are written atomically with a stats file beside them, so a re-run skips them (idempotent);
shards a run no longer produces are deleted and data/manifest.json lists the ones it did. An input file that
cannot be read to its end is reported with its reason and gives an empty shard (see `PipelineRunner._run_shard`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.audit import StepStats, merge_step_lists, write_audit
from lmforge.data.document import Document, Drop, Step
from lmforge.data.manifest import ensure_writable_dir, expected_files, remove_stale_outputs, write_manifest
from lmforge.data.pipeline_config import PipelineConfig
from lmforge.data.readers import BadInput, ReaderConfig, ReadStats, expand_inputs, read_file
from lmforge.data.steps import GlobalStep, build_step
from lmforge.data.writers import JsonlWriter, open_writer, shard_name

ProgressFn = Callable[[str, int, int, bool], None]  # (stage label, shards done, shards total, skipped)


@dataclass
class Stage:
    """An optional global step followed by per-document steps."""

    index: int
    global_step: GlobalStep | None = None
    steps: list[Step] = field(default_factory=list)

    @property
    def label(self) -> str:
        names = ([self.global_step.name] if self.global_step else []) + [s.name for s in self.steps]
        return f"stage {self.index}: " + (", ".join(names) or "copy")


def plan_stages(config: PipelineConfig) -> list[Stage]:
    """Split the step list at each global step."""
    stages = [Stage(0)]
    for table in config.steps:
        _, step, is_global = build_step(table)
        if is_global:
            stages.append(Stage(len(stages), global_step=step))
        else:
            stages[-1].steps.append(step)
    return stages


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _load_json(path: Path) -> Any:
    """The JSON in a bookkeeping file, or None when it is missing or damaged (then the work is redone)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def output_manifest(out: Path, shards: list[Path], shard_stats: list[dict[str, Any]]) -> None:
    """data/manifest.json from the last stage's shards and their statistics (both runners call it)."""
    write_manifest(out / "data", [{"file": p.name, "docs": st["written"], "bytes": st["bytes"]}
                                  for p, st in zip(shards, shard_stats, strict=True)])


def apply_stage(stage: Stage, doc: Document, reason: str | None, global_stats: StepStats | None,
                step_stats: list[StepStats]) -> Document | Drop:
    """One document through one stage: the global step's verdict (`reason`; None keeps it), then each
    per-document step in order, counting documents and bytes into the stats. The local and the Ray
    runners both call it, so their statistics agree."""
    result: Document | Drop = doc
    size = _nbytes(doc.text)
    if global_stats is not None:
        global_stats.record(size, size if reason is None else None, reason, doc=(doc.id, doc.text))
        if reason is not None:
            return Drop(reason)
    for step, st in zip(stage.steps, step_stats, strict=True):
        before = result.text
        result = step.apply(result)
        if isinstance(result, Drop):
            st.record(size, None, result.reason, doc=(doc.id, doc.text))
            return result
        new_size = _nbytes(result.text)
        st.record(size, new_size, modified=result.text != before)
        size = new_size
    return result


class PipelineRunner:
    """`run()` processes every stage and returns the merged statistics (also written as stats.json)."""

    def __init__(self, config: PipelineConfig, progress: ProgressFn | None = None) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self.progress = progress
        self.stages = plan_stages(config)
        self._notes: dict[int, dict[int, dict[int, dict]]] = {}  # stage -> shard -> row -> metadata to add

    def _fingerprint(self, inputs: list[Path]) -> str:
        # an input file that changed (size or modification time) invalidates every finished shard
        files = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in inputs]
        payload = {"config": asdict(self.config), "inputs": files}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def _stage_dir(self, stage: Stage) -> Path:
        return self.out / "data" if stage.index == len(self.stages) - 1 else self.out / "_work" / f"stage-{stage.index}"

    def run(self) -> dict[str, Any]:
        inputs = expand_inputs(list(self.config.inputs))
        ensure_writable_dir(self.out)
        cfg = self.config
        remove_stale_outputs(self.out, expected_files(self.out, len(self.stages), len(inputs), cfg.output_format,
                                                      cfg.compression, cfg.keep_removed, resumable=True))
        marker = self.out / "_pipeline.json"
        fingerprint = self._fingerprint(inputs)
        previous = _load_json(marker)
        force = not isinstance(previous, dict) or previous.get("fingerprint") != fingerprint
        marker.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
        read_total, step_lists, shards, final = ReadStats(), [], inputs, {"docs": 0, "bytes": 0, "shards": 0}
        for stage in self.stages:
            shards, shard_stats, force = self._run_stage(stage, shards, force)
            stage_steps = [[StepStats.from_dict(s) for s in st["steps"]] for st in shard_stats]
            step_lists.append(merge_step_lists(stage_steps))
            if stage.index == 0:
                for st in shard_stats:
                    read_total.merge(ReadStats(**st["read"]))
        for st in shard_stats:
            final["docs"] += st["written"]
            final["bytes"] += st["bytes"]
        final["shards"] = len(shards)
        output_manifest(self.out, shards, shard_stats)
        stats = {
            "read": read_total.to_dict(),
            "steps": [s.to_dict() for steps in step_lists for s in steps],
            "output": final,
            "output_dir": str(self.out / "data"),
        }
        write_audit(self.out, stats)
        return stats

    def _read(self, stage: Stage, path: Path, read_stats: ReadStats) -> Iterator[Document]:
        cfg = self.config.reader if stage.index == 0 else ReaderConfig(text_field=self.config.reader.text_field)
        return read_file(path, cfg, read_stats)

    def _global_removals(self, stage: Stage, shards: list[Path], force: bool) -> tuple[dict, bool]:
        """{shard index: {row: reason}} from the stage's global step, cached in _global.json."""
        cache = self._stage_dir(stage) / "_global.json"
        if stage.global_step is None:
            return {}, False
        notes_cache = cache.with_name("_global_meta.json")
        data = None if force else _load_json(cache)
        notes = _load_json(notes_cache) if notes_cache.is_file() else {}
        if isinstance(data, dict) and isinstance(notes, dict):  # else missing or damaged: computed again
            self._notes[stage.index] = {int(s): {int(r): m for r, m in rows.items()} for s, rows in notes.items()}
            return {int(s): {int(r): why for r, why in rows.items()} for s, rows in data.items()}, False
        owners: list[tuple[int, int]] = []

        def texts() -> Iterator[str]:
            for s, path in enumerate(shards):
                for row, doc in enumerate(self._read(stage, path, ReadStats())):
                    owners.append((s, row))
                    yield doc.text

        removals: dict[int, dict[int, str]] = {}
        for index, reason in stage.global_step.find_removals(texts()).items():
            s, row = owners[index]
            removals.setdefault(s, {})[row] = reason
        cache.parent.mkdir(parents=True, exist_ok=True)
        if hasattr(stage.global_step, "annotations"):  # metadata a global step records (e.g. perplexity)
            notes: dict[int, dict[int, dict]] = {}
            for index, values in stage.global_step.annotations().items():
                s, row = owners[index]
                notes.setdefault(s, {})[row] = values
            self._notes[stage.index] = notes
            notes_cache.write_text(json.dumps(notes))
        else:  # a stage that used to hold an annotating step must not reuse its metadata
            self._notes.pop(stage.index, None)
            notes_cache.unlink(missing_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        tmp.write_text(json.dumps({s: rows for s, rows in removals.items()}))
        tmp.replace(cache)
        return removals, True

    def _run_stage(self, stage: Stage, shards: list[Path], force: bool) -> tuple[list[Path], list[dict], bool]:
        stage_dir = self._stage_dir(stage)
        final = stage.index == len(self.stages) - 1
        fmt, comp = (self.config.output_format, self.config.compression) if final else ("jsonl", "none")
        removals, changed = self._global_removals(stage, shards, force)
        force = force or changed
        outputs, all_stats = [], []
        for i, path in enumerate(shards):
            out_path = stage_dir / shard_name(f"part-{i:05d}", fmt, comp)
            stats_path = stage_dir / f"part-{i:05d}.stats.json"
            cached = _load_json(stats_path) if not force and out_path.is_file() else None
            skip = isinstance(cached, dict)
            if skip:
                all_stats.append(cached)
            else:
                all_stats.append(self._run_shard(stage, i, path, out_path, removals.get(i, {}), fmt, comp))
                tmp = stats_path.with_name(stats_path.name + ".tmp")
                tmp.write_text(json.dumps(all_stats[-1]))
                tmp.replace(stats_path)
                changed = True
            outputs.append(out_path)
            if self.progress is not None:
                self.progress(stage.label, i + 1, len(shards), skip)
        return outputs, all_stats, force or changed

    def _run_shard(self, stage: Stage, shard: int, path: Path, out_path: Path, removals: dict[int, str],
                   fmt: str, comp: str) -> dict[str, Any]:
        """Write one shard. An input file that cannot be read to its end (corrupt or truncated stream, junk
        parquet) is reported with its reason and its shard written empty: the documents read before the damage
        are dropped, so the output does not depend on where in the file the damage lies (a truncated file cut
        elsewhere gives the same output), and the shard-per-input layout that resuming relies on is kept."""
        read_stats = ReadStats()
        docs = self._read(stage, path, read_stats)
        try:
            return self._write_shard(stage, shard, docs, read_stats, out_path, removals, fmt, comp)
        except BadInput as err:
            if stage.index > 0 or self.config.reader.strict:
                raise
            bad = ReadStats.of_bad_file(path, err.reason)
            return self._write_shard(stage, shard, iter(()), bad, out_path, removals, fmt, comp)

    def _write_shard(self, stage: Stage, shard: int, docs: Iterator[Document], read_stats: ReadStats,
                     out_path: Path, removals: dict[int, str], fmt: str, comp: str) -> dict[str, Any]:
        text_field = self.config.reader.text_field
        global_stats = StepStats(stage.global_step.name) if stage.global_step else None
        step_stats = [StepStats(s.name) for s in stage.steps]
        removed_path = self.out / "removed" / f"stage-{stage.index}" / f"part-{shard:05d}.jsonl"
        removed = JsonlWriter(removed_path) if self.config.keep_removed else None
        written = written_bytes = 0
        ok = False
        try:
            with open_writer(out_path, fmt, comp, text_field) as writer:
                notes = self._notes.get(stage.index, {}).get(shard, {})
                for row, doc in enumerate(docs):
                    doc.meta.update(notes.get(row, {}))
                    result = apply_stage(stage, doc, removals.get(row), global_stats, step_stats)
                    if isinstance(result, Drop):
                        if removed is not None:
                            removed.write({**doc.to_record(text_field), "removed_reason": result.reason})
                        continue
                    writer.write(result.to_record(text_field))
                    written += 1
                    written_bytes += _nbytes(result.text)
            ok = True
        finally:
            if removed is not None:
                removed.close(commit=ok)
        steps = ([global_stats] if global_stats else []) + step_stats
        return {"read": read_stats.to_dict(), "steps": [s.to_dict() for s in steps],
                "written": written, "bytes": written_bytes}
