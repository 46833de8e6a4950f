"""Writing outputs: modes that honour the umask, output directories checked before slow work, and staged writes.

safetensors and `tempfile.mkdtemp` create 0600 files / 0700 directories whatever the umask; every writer of
weights, checkpoints and model directories goes through here, so outputs are 0644 / 0755 under umask 022.
A model directory is built in a hidden sibling and renamed into place: a failure never leaves half of one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lmforge.common.errors import LmforgeError


def current_umask() -> int:
    """The process umask (read from /proc on Linux, where setting it to read it would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | Path) -> None:
    """chmod `path` to what open() / mkdir() would have given it: 0666 or 0777 less the umask."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~current_umask())


def save_safetensors(tensors: dict, path: str | Path, metadata: dict | None = None) -> None:
    """safetensors.torch.save_file (contiguous CPU copies), then the file mode the umask asks for."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)
    honour_umask(path)


def why_unwritable(path: Path) -> str | None:
    """Create directory `path` (and parents) and a file in it; None when that works, else why not, in words."""
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is not a directory"
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"cannot create {path} ({err.strerror or type(err).__name__})"
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".lmforge-write-test-"):
            pass
    except OSError as err:
        return f"cannot create files in {path} ({err.strerror or type(err).__name__})"
    return None


def ensure_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create directory `path` (and its parents) or raise a one-line LmforgeError saying why it cannot be."""
    path = Path(path).expanduser()
    if problem := why_unwritable(path):
        raise LmforgeError(f"cannot write {flag} {path}: {problem}")
    return path


@contextmanager
def staged_output_dir(out: str | Path, flag: str = "--out") -> Iterator[Path]:
    """A fresh directory to fill, renamed to `out` when the block ends without an error (removed if it fails).

    `out` must be absent or an empty directory; this is checked, and its parent created, before the block runs,
    so an unwritable destination is refused before any slow loading.
    """
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmforgeError(f"output {out} already exists and is not an empty directory")
    if problem := why_unwritable(out.parent):
        raise LmforgeError(f"cannot write {flag} {out}: {problem}")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise LmforgeError(f"cannot write {flag} {out}: {err.strerror or type(err).__name__}") from None
    try:
        yield staging
        for item in [staging, *staging.rglob("*")]:
            honour_umask(item)
        if out.exists():
            out.rmdir()  # checked empty above
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
