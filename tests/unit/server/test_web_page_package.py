"""Issue 25 item 1: the web page's files ship inside the package. An editable install reads them from the source
tree, so only a built wheel shows whether pyproject's package-data carries them: build one from a copy of the
sources (no network, no build isolation) and look inside."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from lmforge.server.page import ASSETS, STATIC

ROOT = Path(__file__).resolve().parents[3]


def test_the_wheel_carries_the_web_page(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "lmforge", source / "lmforge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "build", "*.egg-info"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("lmforge-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"lmforge/server/static/{name}" for name, _ in ASSETS.values()}
    assert shipped <= names, shipped - names
    assert {p.name for p in Path(str(STATIC)).iterdir()} == {name for name, _ in ASSETS.values()}  # all served
