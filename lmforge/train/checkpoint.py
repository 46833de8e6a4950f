"""Atomic, verifiable training checkpoints without pickle: tensors (model, optimizer moments, torch RNG) in
safetensors, small state (step, data cursor, Python/NumPy RNG, scheduler inputs) in JSON, and a manifest with
SHA-256 checksums written last. A checkpoint is staged in a temporary directory, fsynced, then renamed into
place, so a crash leaves either the old set or a complete new one; partial or corrupted ones are skipped (and, when
a resume skips them, renamed aside to step-N.corrupt: kept for inspection, never counted or deleted by retention).
Distributed runs stage torch.distributed.checkpoint shards instead of model/optimizer safetensors (layout "dcp",
sharded_checkpoint.py); the manifest, checksums, rename and retention are the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from lmforge.common.files import save_safetensors

MANIFEST = "manifest.json"
FORMAT = "lmforge-checkpoint-v1"
LAYOUTS = ("safetensors", "dcp")  # how model + optimizer are stored; state.json and rng.safetensors in both
_STEP_DIR = re.compile(r"^step-(\d{8})$")


@dataclass
class Checkpoint:
    path: Path
    step: int
    tensors: dict[str, dict[str, torch.Tensor]]  # file stem -> tensors (e.g. "model", "optimizer", "rng")
    state: dict  # the JSON state
    layout: str = "safetensors"  # "dcp": model and optimizer are torch.distributed.checkpoint shards in `path`


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(root: str | Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict,
                    keep: int) -> Path:
    """Write root/step-XXXXXXXX atomically, then delete all but the newest `keep` checkpoints."""
    tmp = stage_checkpoint(root, step)
    write_state_files(tmp, tensors, state)
    return commit_checkpoint(tmp, step, keep)


def stage_checkpoint(root: str | Path, step: int, tag: str | int | None = None) -> Path:
    """A new, empty staging directory root/.tmp-step-XXXXXXXX-<tag> (default tag: this process id) to write a
    checkpoint into; `commit_checkpoint` turns it into root/step-XXXXXXXX."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{step:08d}-{os.getpid() if tag is None else tag}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def write_state_files(tmp: Path, tensors: dict[str, dict[str, torch.Tensor]], state: dict) -> None:
    """<stem>.safetensors per tensor group and state.json into a staging directory."""
    for stem, group in tensors.items():
        save_safetensors(group, tmp / f"{stem}.safetensors")
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")


def commit_checkpoint(tmp: Path, step: int, keep: int, layout: str | None = None) -> Path:
    """Checksum every file of the staging directory `tmp` into its manifest (written last), fsync, rename it to
    step-XXXXXXXX beside it, then delete all but the newest `keep` checkpoints. `layout` names how the model and
    optimizer are stored when not as <stem>.safetensors (e.g. "dcp": torch.distributed.checkpoint shards)."""
    root = tmp.parent
    final = root / f"step-{step:08d}"
    files = {}
    for file in sorted(tmp.iterdir()):
        _fsync(file)
        files[file.name] = {"sha256": _sha256(file), "bytes": file.stat().st_size}
    manifest = {"format": FORMAT, "step": step, "files": files, **({"layout": layout} if layout else {})}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    _fsync(tmp / MANIFEST)
    _fsync(tmp)
    if final.exists():  # the same step saved again (e.g. after an interrupt right after a periodic save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync(root)
    # Retention counts only checkpoints older than this one, the newest valid: higher-numbered leftovers (corrupt
    # ones a resume skipped) are neither "newer" nor deleted here.
    older = [p for p in list_checkpoints(root) if _step(p) < step]
    for old in older[:max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _step(path: Path) -> int:
    return int(_STEP_DIR.match(path.name).group(1))


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete-looking checkpoint directories, oldest first (temporary staging directories excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=_step)


def verify_checkpoint(path: Path) -> str | None:
    """None when every file of the manifest is present with its size and checksum; else why not."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest.json (partial write)"
    try:
        manifest = json.loads(manifest_path.read_text())
        problem = _manifest_problem(manifest, path)
        if problem is not None:
            return problem
        for name, meta in manifest["files"].items():
            file = path / name
            if not file.is_file():
                return f"{name} is missing"
            if file.stat().st_size != meta["bytes"]:
                return f"{name} has {file.stat().st_size} bytes, the manifest says {meta['bytes']}"
            if _sha256(file) != meta["sha256"]:
                return f"{name} does not match its checksum"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"manifest.json is not valid JSON ({err})"
    except OSError as err:  # unreadable, or moved away by another rank meanwhile
        return f"cannot read it ({err.strerror or err})"
    return None


def _manifest_problem(manifest, path: Path) -> str | None:
    """Why a parsed manifest is not one this module wrote for `path` (hand-edited, another format), or None."""
    if not isinstance(manifest, dict):
        return f"manifest.json holds a {type(manifest).__name__}, not an object"
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')!r}, expected {FORMAT!r}"
    if manifest.get("step") != _step(path) or isinstance(manifest.get("step"), bool):
        return f"manifest.json says step {manifest.get('step')!r}, the directory name step {_step(path)}"
    files = manifest.get("files")
    if not isinstance(files, dict) or "state.json" not in files:
        return "manifest.json lists no files, or not state.json"
    if manifest.get("layout", "safetensors") not in LAYOUTS:
        return f"layout {manifest.get('layout')!r}, expected one of {LAYOUTS}"
    if manifest.get("layout") == "dcp" and ".metadata" not in files:
        return "manifest.json of a sharded (dcp) checkpoint lists no .metadata"
    for name, meta in files.items():
        if Path(name).name != name or name in (".", "..", MANIFEST):
            return f"manifest.json lists {name!r}, not a plain file name of the checkpoint"
        if (not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str)
                or type(meta.get("bytes")) is not int):
            return f"manifest.json entry of {name} lacks its sha256 / bytes"
    return None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint that `verify_checkpoint` passed; a file that still cannot be read raises CheckpointError."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        tensors = {name.removesuffix(".safetensors"): load_file(str(path / name))
                   for name in manifest["files"] if name.endswith(".safetensors")}
        state = json.loads((path / "state.json").read_text())
    except Exception as err:  # safetensors raises its own types for a damaged header
        raise CheckpointError(f"cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"state.json holds a {type(state).__name__}, not an object")
    return Checkpoint(path=path, step=int(manifest["step"]), tensors=tensors, state=state,
                      layout=manifest.get("layout", "safetensors"))


class CheckpointError(Exception):
    """A checkpoint that verified but cannot be read (its message says why)."""


def scan_checkpoints(root: str | Path, log=print) -> tuple[Checkpoint | None, list[tuple[Path, str]]]:
    """(the newest checkpoint that verifies and reads, or None; the newer ones skipped, with the reason of each).

    Unfinished staging directories of an interrupted save are removed; each skipped checkpoint is reported via `log`.
    """
    root = Path(root)
    for stale in root.glob(".tmp-step-*") if root.is_dir() else []:
        log(f"removing unfinished checkpoint {stale.name} (a save was interrupted)")
        shutil.rmtree(stale, ignore_errors=True)
    skipped = []
    for path in reversed(list_checkpoints(root)):
        problem = verify_checkpoint(path)
        if problem is None:
            try:
                return load_checkpoint(path), skipped
            except CheckpointError as err:
                problem = str(err)
        log(f"skipping corrupted checkpoint {path.name}: {problem}")
        skipped.append((path, problem))
    return None, skipped


def latest_valid_checkpoint(root: str | Path, log=print) -> Checkpoint | None:
    """The newest checkpoint that verifies; each one skipped is reported through `log` with the reason."""
    return scan_checkpoints(root, log)[0]


def set_aside(path: Path, suffix: str) -> Path:
    """Rename `path` to path + suffix (+ "-2", "-3"... if taken), out of every listing here; the new path."""
    target, n = path.with_name(path.name + suffix), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{suffix}-{n}")
    os.rename(path, target)
    return target
