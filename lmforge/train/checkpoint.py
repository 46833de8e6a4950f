"""Atomic, verifiable training checkpoints without pickle: tensors (model, optimizer moments, torch RNG) in
safetensors, small state (step, data cursor, Python/NumPy RNG, scheduler inputs) in JSON, and a manifest with
SHA-256 checksums written last. A checkpoint is staged in a temporary directory, fsynced, then renamed into
place, so a crash leaves either the old set or a complete new one; partial or corrupted ones are skipped.
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
from safetensors.torch import load_file, save_file

MANIFEST = "manifest.json"
FORMAT = "lmforge-checkpoint-v1"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


@dataclass
class Checkpoint:
    path: Path
    step: int
    tensors: dict[str, dict[str, torch.Tensor]]  # file stem -> tensors (e.g. "model", "optimizer", "rng")
    state: dict  # the JSON state


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
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files = {}
    for stem, group in tensors.items():
        name = f"{stem}.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in group.items()}, str(tmp / name))
        files[name] = None
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    files["state.json"] = None
    for name in files:
        _fsync(tmp / name)
        files[name] = {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "step": step, "files": files}, indent=1) + "\n")
    _fsync(tmp / MANIFEST)
    _fsync(tmp)
    if final.exists():  # the same step saved again (e.g. after an interrupt right after a periodic save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync(root)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete-looking checkpoint directories, oldest first (temporary staging directories excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def verify_checkpoint(path: Path) -> str | None:
    """None when every file of the manifest is present with its size and checksum; else why not."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest.json (partial write)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        return f"manifest.json is not valid JSON ({err})"
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')!r}, expected {FORMAT!r}"
    for name, meta in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != meta["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {meta['bytes']}"
        if _sha256(file) != meta["sha256"]:
            return f"{name} does not match its checksum"
    return None


def load_checkpoint(path: Path) -> Checkpoint:
    manifest = json.loads((path / MANIFEST).read_text())
    tensors = {name.removesuffix(".safetensors"): load_file(str(path / name))
               for name in manifest["files"] if name.endswith(".safetensors")}
    state = json.loads((path / "state.json").read_text())
    return Checkpoint(path=path, step=int(manifest["step"]), tensors=tensors, state=state)


def latest_valid_checkpoint(root: str | Path, log=print) -> Checkpoint | None:
    """The newest checkpoint that verifies; each one skipped is reported through `log` with the reason."""
    root = Path(root)
    for stale in root.glob(".tmp-step-*") if root.is_dir() else []:
        log(f"removing unfinished checkpoint {stale.name} (a save was interrupted)")
        shutil.rmtree(stale, ignore_errors=True)
    for path in reversed(list_checkpoints(root)):
        problem = verify_checkpoint(path)
        if problem is None:
            return load_checkpoint(path)
        log(f"skipping corrupted checkpoint {path.name}: {problem}")
    return None
