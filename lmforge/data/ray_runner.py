"""Runs a data pipeline on Ray Data, locally or on a cluster, with the same stages, steps and output as the
local runner: Ray tasks read the input files, `map_batches` runs each stage's documents through the local
runner's `apply_stage`, global steps run as in `ray_dedup`, and one groupby on the shard writes every shard.
Every path (inputs, output) must be visible to every node (a shared filesystem), with lmforge installed on each.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.common.errors import LmforgeError
from lmforge.data.audit import StepStats, merge_step_lists, write_audit
from lmforge.data.document import Document, Drop
from lmforge.data.manifest import ensure_writable_dir, expected_files, remove_stale_outputs
from lmforge.data.pipeline import ProgressFn, Stage, apply_stage, output_manifest, plan_stages
from lmforge.data.pipeline_config import PipelineConfig
from lmforge.data.ray_dedup import global_removals
from lmforge.data.readers import BadInput, ReaderConfig, ReadStats, expand_inputs, read_file
from lmforge.data.steps import STEP_TYPES
from lmforge.data.writers import JsonlWriter, open_writer, shard_name

# A row: a document (`meta`: its other fields as JSON), where it was first read (shard, pos), the reason it
# was removed ('' while kept) and the stage that removed it (-1), and what each step counted, per stage.
COLUMNS = ("shard", "pos", "id", "text", "meta", "drop", "dropped_at", "traces")
INT_COLUMNS = ("shard", "pos", "dropped_at")
Batch = dict[str, np.ndarray]
_STAGES: dict[str, Stage] = {}  # per worker process: stages built once (steps can hold models)


def require_ray() -> Any:
    """The `ray` module with Ray Data, or a clear error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise LmforgeError("the Ray engine needs Ray Data, which is not installed: "
                           "pip install 'lmforge[ray]'") from err
    return ray


def connect(address: str | None) -> bool:
    """Join the Ray cluster at `address` (None: start a local Ray); True if this call started Ray."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:
        kwargs["include_dashboard"] = False
    elif ":" in address and "://" not in address:  # HOST:PORT of a head node: Ray would retry for minutes
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as err:
            raise LmforgeError(f"cannot reach the Ray head at ray_address={address!r} ({err}); start one with "
                               "`ray start --head` or use ray_address='auto' on a node of the cluster") from err
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise LmforgeError(f"cannot connect to the Ray cluster at ray_address={address!r}: {err}") from err
    return True


def stage_tables(config: PipelineConfig) -> list[tuple[dict[str, Any], ...]]:
    """The step tables of each stage, split like `plan_stages`: a global step opens a new stage."""
    stages: list[list[dict[str, Any]]] = [[]]
    for table in config.steps:
        if STEP_TYPES[table["type"]].is_global:
            stages.append([])
        stages[-1].append(table)
    return [tuple(s) for s in stages]


def _stage(config: PipelineConfig, tables: tuple) -> Stage:
    key = json.dumps(tables, sort_keys=True, default=str)
    if key not in _STAGES:
        _STAGES[key] = plan_stages(dataclasses.replace(config, steps=tables))[-1]
    return _STAGES[key]


def _dumps(meta: dict) -> str:
    return json.dumps(meta, ensure_ascii=False, default=str)  # as the JSONL writer serialises it


def _batch(cols: dict[str, list]) -> Batch:
    return {c: np.array(v, dtype=np.int64 if c in INT_COLUMNS else object) for c, v in cols.items()}


def _read_shard(shard: int, path: str, cfg: ReaderConfig) -> tuple[Any, dict]:
    """A Ray task: one input file as an arrow table of rows, and its ReadStats. A damaged file gives no rows
    and is reported, as in the local runner; with `strict`, the stats hold the error for the driver to raise."""
    import pyarrow as pa

    stats, cols = ReadStats(), {c: [] for c in COLUMNS}
    try:
        for pos, doc in enumerate(read_file(Path(path), cfg, stats)):
            for column, value in zip(COLUMNS, (shard, pos, doc.id, doc.text, _dumps(doc.meta), "", -1, "[]"),
                                     strict=True):
                cols[column].append(value)
    except BadInput as err:
        cols = {c: [] for c in COLUMNS}
        stats = ReadStats.of_bad_file(Path(path), err.reason)
        if cfg.strict:
            return None, {"error": str(err)}
    types = {"shard": pa.int64(), "pos": pa.int64(), "dropped_at": pa.int64()}
    schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
    return pa.table(cols, schema=schema), stats.to_dict()


def _reread(doc: Document, text_field: str) -> Document:
    """The document as the local runner reads it back from the previous stage's JSONL (id from 'id')."""
    record = doc.to_record(text_field)
    record.pop(text_field)
    doc_id = record.get("id")
    return Document(str(doc_id) if doc_id is not None else doc.id, doc.text, json.loads(_dumps(record)))


def map_stage(batch: Batch, config: PipelineConfig, tables: tuple, index: int, removals: dict, notes: dict) -> Batch:
    """Ray Data map: kept documents through stage `index` (`apply_stage`), removed ones passed on as they are."""
    stage, text_field = _stage(config, tables), config.reader.text_field
    out: dict[str, list] = {c: [] for c in COLUMNS}
    for row in zip(*(batch[c] for c in COLUMNS), strict=True):
        shard, pos, doc_id, text, meta, drop, dropped_at, traces = row
        if not drop:
            key = (int(shard), int(pos))
            doc = Document(str(doc_id), str(text), json.loads(meta))
            doc = _reread(doc, text_field) if index > 0 else doc
            doc.meta.update(notes.get(key, {}))
            global_stats = StepStats(stage.global_step.name) if stage.global_step else None
            step_stats = [StepStats(s.name) for s in stage.steps]
            result = apply_stage(stage, doc, removals.get(key), global_stats, step_stats)
            kept = doc if isinstance(result, Drop) else result  # a removed document is kept as it came in
            doc_id, text, meta = kept.id, kept.text, _dumps(kept.meta)
            if isinstance(result, Drop):
                drop, dropped_at = result.reason, index
            counted = ([global_stats] if global_stats else []) + step_stats
            trace = [[s.bytes_in, s.bytes_out if s.docs_out else None, next(iter(s.removed), None), s.modified]
                     for s in counted if s.docs_in]  # the steps it reached, as `StepStats.record` arguments
            traces = json.dumps([*json.loads(traces), trace])
        for column, value in zip(COLUMNS, (shard, pos, doc_id, text, meta, drop, dropped_at, traces), strict=True):
            out[column].append(value)
    return _batch(out)


def _kept(batch: Batch) -> Batch:
    keep = batch["drop"] == ""
    return {c: batch[c][keep] for c in ("shard", "pos", "text")}


def write_shard(group: Batch, shard: int, stages: list[list[str]], data: str, removed: list[str] | None,
                fmt: str, comp: str, text_field: str) -> list[dict[str, Any]]:
    """One shard, rows in their original order: the kept documents to `data`, the removed ones to the
    `removed` file of the stage that removed them; returns the shard's statistics per stage."""
    stats = [[StepStats(name) for name in names] for names in stages]
    writer = open_writer(Path(data), fmt, comp, text_field)
    removed_writers = [JsonlWriter(Path(p)) for p in removed] if removed else None
    written = written_bytes = 0
    ok = False
    try:
        for i in np.argsort(group["pos"], kind="stable") if len(group["pos"]) else []:
            doc = Document(str(group["id"][i]), str(group["text"][i]), json.loads(group["meta"][i]))
            for stage_stats, trace in zip(stats, json.loads(group["traces"][i]), strict=False):
                for st, (bytes_in, bytes_out, reason, modified) in zip(stage_stats, trace, strict=False):
                    st.record(bytes_in, bytes_out, reason, modified=bool(modified), doc=(doc.id, doc.text))
            if group["drop"][i]:
                if removed_writers is not None:
                    record = {**doc.to_record(text_field), "removed_reason": str(group["drop"][i])}
                    removed_writers[int(group["dropped_at"][i])].write(record)
                continue
            writer.write(doc.to_record(text_field))
            written += 1
            written_bytes += len(doc.text.encode("utf-8"))
        ok = True
    finally:
        for w in [writer, *(removed_writers or [])]:
            w.close(commit=ok)
    result = [{"steps": [s.to_dict() for s in stage_stats]} for stage_stats in stats]
    result[-1].update(written=written, bytes=written_bytes)
    return result


def _write_group(group: Batch, data: list[str], removed: list[list[str]] | None, **spec: Any) -> Batch:
    shard = int(group["shard"][0])
    stats = write_shard(group, shard, data=data[shard], removed=removed[shard] if removed else None, **spec)
    return {"shard": np.array([shard]), "stats": np.array([json.dumps(stats)], dtype=object)}


class RayPipelineRunner:
    """`run()` returns the statistics of `PipelineRunner.run()` and writes the same data/, removed/,
    stats.json and report.md. It recomputes everything (no resume) and drops the local runner's marker."""

    def __init__(self, config: PipelineConfig, progress: ProgressFn | None = None) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self.progress = progress
        self.stages = plan_stages(config)
        self.tables = stage_tables(config)

    def run(self) -> dict[str, Any]:
        started = connect(self.config.ray_address)
        from ray.data import DataContext
        from ray.data.context import ShuffleStrategy

        context = DataContext.get_current()
        strategy, context.shuffle_strategy = context.shuffle_strategy, ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
        # the groupbys (exact dedup, writing shards) as a sort-based shuffle: the hash shuffle first starts
        # aggregator actors, seconds of overhead per groupby on a small corpus
        try:
            return self._run()
        finally:
            context.shuffle_strategy = strategy
            if started:
                require_ray().shutdown()

    def _run(self) -> dict[str, Any]:
        import ray

        cfg, inputs = self.config, expand_inputs(list(self.config.inputs))
        ensure_writable_dir(self.out)
        (self.out / "_pipeline.json").unlink(missing_ok=True)  # the local runner's finished shards are stale
        remove_stale_outputs(self.out, expected_files(self.out, len(self.stages), len(inputs), cfg.output_format,
                                                      cfg.compression, cfg.keep_removed, resumable=False))
        read = ray.remote(_read_shard).options(num_returns=2)
        refs = [read.remote(i, str(p), cfg.reader) for i, p in enumerate(inputs)]
        read_total = ReadStats()
        for stats in ray.get([r[1] for r in refs]):
            if "error" in stats:  # --strict: the first bad input, in input order
                raise LmforgeError(stats["error"])
            read_total.merge(ReadStats(**stats))
        ds = ray.data.from_arrow_refs([r[0] for r in refs])
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        for stage, tables in zip(self.stages, self.tables, strict=True):
            removals, notes = {}, {}
            if stage.global_step is not None:
                ds = ds.materialize()  # read by the global step, then by the stage's map
                kept = ds.map_batches(_kept, batch_format="numpy")
                removals, notes = global_removals(kept, stage.global_step, workers)
            ds = ds.map_batches(map_stage, fn_args=(cfg, tables, stage.index, removals, notes),
                                batch_size=256, batch_format="numpy")
        shard_stats = self._write(ds, len(inputs))
        step_lists = [merge_step_lists([[StepStats.from_dict(s) for s in st[k]["steps"]] for st in shard_stats])
                      for k in range(len(self.stages))]
        for stage in self.stages:
            if self.progress is not None:
                self.progress(stage.label, len(inputs), len(inputs), False)
        final = {"docs": sum(st[-1]["written"] for st in shard_stats),
                 "bytes": sum(st[-1]["bytes"] for st in shard_stats), "shards": len(inputs)}
        data = [self.out / "data" / shard_name(f"part-{i:05d}", cfg.output_format, cfg.compression)
                for i in range(len(inputs))]
        output_manifest(self.out, data, [st[-1] for st in shard_stats])
        stats = {"read": read_total.to_dict(), "steps": [s.to_dict() for steps in step_lists for s in steps],
                 "output": final, "output_dir": str(self.out / "data")}
        write_audit(self.out, stats)
        return stats

    def _write(self, ds: Any, shards: int) -> list[list[dict[str, Any]]]:
        """Group the rows by shard and write each shard; shards with no rows at all are written empty here."""
        cfg = self.config
        fmt, comp = cfg.output_format, cfg.compression
        data = [str(self.out / "data" / shard_name(f"part-{i:05d}", fmt, comp)) for i in range(shards)]
        removed = None
        if cfg.keep_removed:
            removed = [[str(self.out / "removed" / f"stage-{s.index}" / f"part-{i:05d}.jsonl") for s in self.stages]
                       for i in range(shards)]
        names = [([s.global_step.name] if s.global_step else []) + [step.name for step in s.steps]
                 for s in self.stages]
        spec = {"stages": names, "fmt": fmt, "comp": comp, "text_field": cfg.reader.text_field}
        rows = ds.groupby("shard").map_groups(_write_group, fn_kwargs={"data": data, "removed": removed, **spec},
                                              batch_format="numpy").take_all()
        by_shard = {int(r["shard"]): json.loads(r["stats"]) for r in rows}
        for i in range(shards):
            if i not in by_shard:
                empty = {c: np.array([], dtype=object) for c in COLUMNS}
                by_shard[i] = write_shard(empty, i, data=data[i], removed=removed[i] if removed else None, **spec)
        return [by_shard[i] for i in range(shards)]
