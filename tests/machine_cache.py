"""A directory built once per machine and shared by every test process: under the temp directory (or
LMFORGE_TEST_CACHE), named by what it holds and a key of what it was built from, built under a file lock so that
concurrent test workers build it once, and marked done only when the build finished."""

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def cached_dir(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """The directory for (name, key), calling `build(directory)` first if no finished build is there."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = Path(os.environ.get("LMFORGE_TEST_CACHE", tempfile.gettempdir())) / f"lmforge-{name}-{digest}"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            build(root)
            (root / "done").write_text("ok\n")
    return root
