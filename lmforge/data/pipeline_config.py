"""The pipeline file: a TOML document naming the inputs, the output and an ordered list of steps.

    [input]   paths = ["raw/*.jsonl.zst"], text_field = "text", strict = false
    [output]  dir = "clean", format = "jsonl", compression = "zstd", keep_removed = true
    [[steps]] type = "gopher_quality", min_words = 50
    [run]     engine = "ray", ray_address = "auto"      (optional; the default engine is "local")
Relative paths are resolved against the directory of the TOML file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.readers import ReaderConfig
from lmforge.data.steps import make_config
from lmforge.data.validate import one_of
from lmforge.data.writers import OUTPUT_COMPRESSIONS, OUTPUT_FORMATS

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class PipelineConfig:
    """inputs: files, directories or globs. output_dir: where shards, stats.json and report.md go.
    output_format: 'jsonl' or 'parquet'. compression: for JSONL ('none', 'gzip', 'zstd').
    keep_removed: also write removed documents with their reason under output_dir/removed.
    steps: the step tables, in order (validated on construction).
    engine: 'local' (one process, resumable) or 'ray' (Ray Data, same output). ray_address: the Ray cluster
    to join ('auto', 'HOST:6379', 'ray://HOST:10001'); None starts a local Ray instance.
    """

    inputs: tuple[str, ...]
    output_dir: str
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    output_format: str = "jsonl"
    compression: str = "none"
    keep_removed: bool = False
    steps: tuple[dict[str, Any], ...] = ()
    engine: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("the pipeline needs at least one input path ([input] paths = [...])")
        if not self.output_dir:
            raise ConfigError("the pipeline needs an output directory ([output] dir = ...)")
        one_of("output_format", self.output_format, OUTPUT_FORMATS)
        one_of("compression", self.compression, OUTPUT_COMPRESSIONS)
        one_of("engine", self.engine, ENGINES)
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address):
            raise ConfigError(f"ray_address={self.ray_address!r} must be a non-empty string such as 'auto'")
        names = []
        for i, table in enumerate(self.steps):
            if not isinstance(table, dict) or "type" not in table:
                raise ConfigError(f"step #{i + 1} needs a 'type' key")
            params = {k: v for k, v in table.items() if k not in ("type", "name", "preset")}
            make_config(table["type"], params, table.get("preset", "default"))
            names.append(table.get("name", table["type"]))
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"step names must be unique; repeated: {sorted(dup)} (set 'name' on one of them)")


def _section(data: dict, name: str, allowed: set[str]) -> dict:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"[{name}] must be a table")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"[{name}] has no key {unknown[0]!r}; allowed: {sorted(allowed)}")
    return section


PATH_PARAMS = {"quality_classifier": "model", "toxicity": "model"}  # step parameters that are file paths


def _resolve_step_paths(table: Any, resolve) -> Any:
    key = PATH_PARAMS.get(table.get("type")) if isinstance(table, dict) else None
    if key and isinstance(table.get(key), str) and table[key]:
        return {**table, key: resolve(table[key])}
    return table


def parse_pipeline(data: dict[str, Any], base_dir: Path) -> PipelineConfig:
    """A PipelineConfig from parsed TOML, paths resolved against `base_dir`."""
    unknown = sorted(set(data) - {"input", "output", "steps", "run"})
    if unknown:
        raise ConfigError(f"unknown pipeline section {unknown[0]!r}; allowed: input, output, steps, run")
    inp = _section(data, "input", {"paths", "text_field", "id_field", "txt_unit", "parquet_batch", "strict"})
    out = _section(data, "output", {"dir", "format", "compression", "keep_removed"})
    run = _section(data, "run", {"engine", "ray_address"})
    paths = inp.get("paths", [])
    if isinstance(paths, str):
        paths = [paths]
    resolve = lambda p: str(p) if Path(p).is_absolute() else str(base_dir / p)  # noqa: E731
    reader = ReaderConfig(**{k: v for k, v in inp.items() if k != "paths"})
    steps = data.get("steps", [])
    if not isinstance(steps, list):
        raise ConfigError("steps must be an array of tables ([[steps]])")
    steps = [_resolve_step_paths(t, resolve) for t in steps]
    return PipelineConfig(
        inputs=tuple(resolve(p) for p in paths),
        output_dir=resolve(out.get("dir", "")) if out.get("dir") else "",
        reader=reader,
        output_format=out.get("format", "jsonl"),
        compression=out.get("compression", "none"),
        keep_removed=bool(out.get("keep_removed", False)),
        steps=tuple(steps),
        engine=run.get("engine", "local"),
        ray_address=run.get("ray_address"),
    )


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline TOML file."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"pipeline file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise LmforgeError(f"pipeline file {str(path)!r} is not valid TOML: {err}") from err
    return parse_pipeline(data, path.resolve().parent)
