"""The manifest of a pipeline's output: `data/manifest.json` lists the shards of the last run, and readers given
that directory (`data run`, `data pack`) read exactly those shards. Shard files a run no longer produces (fewer
inputs, another format) are deleted before it writes, so the folder always matches its manifest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lmforge.common.errors import LmforgeError
from lmforge.common.files import why_unwritable
from lmforge.data.writers import shard_name

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "lmforge-data-manifest-v1"
SHARD_FILE = re.compile(r"part-\d{5}\.(jsonl(\.gz|\.zst)?|parquet)")  # the name of a data shard
# the files a runner writes per shard (and their unfinished .tmp), the only files stale-shard cleaning removes
_RUNNER_FILE = re.compile(r"part-\d{5}\.(jsonl(\.gz|\.zst)?|parquet|stats\.json)(\.tmp)?")


def ensure_writable_dir(path: Path, what: str = "output directory") -> None:
    """Create `path` (and its parents) and check that a file can be written in it, or raise a one-line error."""
    if problem := why_unwritable(Path(path)):
        raise LmforgeError(f"cannot write the {what} {str(path)!r}: {problem}; choose a writable directory")


def remove_stale_shards(directory: Path, keep: set[str]) -> list[str]:
    """Delete the shard files of `directory` whose names are not in `keep`; returns the names deleted."""
    if not directory.is_dir():
        return []
    stale = sorted(p.name for p in directory.iterdir()
                   if p.is_file() and _RUNNER_FILE.fullmatch(p.name) and p.name not in keep)
    for name in stale:
        (directory / name).unlink(missing_ok=True)
    return stale


def expected_files(out: Path, stages: int, shards: int, fmt: str, comp: str, keep_removed: bool,
                   resumable: bool) -> dict[Path, set[str]]:
    """The shard files each output folder of a run holds: data/ (the last stage), removed/stage-K when
    removed documents are kept, and the resumable (local) runner's _work/stage-K shards and stats files."""
    parts = [f"part-{i:05d}" for i in range(shards)]
    plan = {out / "data": {shard_name(p, fmt, comp) for p in parts}}
    for k in range(stages):
        plan[out / "removed" / f"stage-{k}"] = {f"{p}.jsonl" for p in parts} if keep_removed else set()
        if resumable:
            last = k == stages - 1
            folder = out / "data" if last else out / "_work" / f"stage-{k}"
            plan.setdefault(folder, set()).update({f"{p}.stats.json" for p in parts})
            plan[folder].update(set() if last else {f"{p}.jsonl" for p in parts})
    return plan


def remove_stale_outputs(out: Path, plan: dict[Path, set[str]]) -> list[str]:
    """Delete every shard file under `out` that `plan` (see `expected_files`) does not name, in the planned
    folders and in stage folders of earlier pipelines; returns the paths deleted, relative to `out`."""
    folders = set(plan) | {d for parent in ("_work", "removed") for d in (out / parent).glob("stage-*") if d.is_dir()}
    return [str((d / name).relative_to(out)) for d in sorted(folders)
            for name in remove_stale_shards(d, plan.get(d, set()))]


def write_manifest(directory: Path, shards: list[dict[str, Any]]) -> None:
    """`manifest.json` in `directory`: every shard as {file, docs, bytes}, in order. Rewritten only when it
    changes, so a re-run that reuses every shard leaves the folder untouched."""
    manifest = {"format": MANIFEST_FORMAT, "docs": sum(s["docs"] for s in shards),
                "bytes": sum(s["bytes"] for s in shards), "shards": shards}
    text = json.dumps(manifest, indent=1) + "\n"
    path = directory / MANIFEST_FILE
    if path.is_file() and path.read_text(encoding="utf-8", errors="replace") == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def manifest_files(directory: Path) -> list[Path] | None:
    """The shard files `directory/manifest.json` lists (None without an lmforge manifest); a one-line error
    when the manifest is unreadable or names a file that is missing or not a shard of this directory."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            return None  # some other tool's manifest.json: not ours to obey
        names = [shard["file"] for shard in manifest["shards"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LmforgeError(f"manifest {str(path)!r} is unreadable ({err}); re-run lmforge data run") from err
    files = []
    for name in names:
        if not isinstance(name, str) or not SHARD_FILE.fullmatch(name):
            raise LmforgeError(f"manifest {str(path)!r} lists {name!r}, not a shard file name such as "
                               "'part-00000.jsonl'; re-run lmforge data run")
        if not (directory / name).is_file():
            raise LmforgeError(f"manifest {str(path)!r} lists {name!r}, which is missing; re-run lmforge data run")
        files.append(directory / name)
    return files
