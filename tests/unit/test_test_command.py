"""The README's test command is what `.ci/run` runs, and its pure-PyTorch pass (LMFORGE_CPU_KERNELS=0, `-m pure`)
covers the generation, engine and server tests: a path moved away fails here instead of silently leaving the pass."""

import re
from pathlib import Path

from tests.conftest import PURE_PATHS

ROOT = Path(__file__).resolve().parents[2]


def test_readme_test_command_is_what_ci_runs_and_includes_the_pure_pass():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    command = next(block for block in blocks if "pytest" in block)
    steps = [step.strip() for step in command.split("&&")]
    assert steps == ["python -m pytest -q", "LMFORGE_CPU_KERNELS=0 python -m pytest -q -m pure"]
    ci = [line.split("#")[0].strip() for line in (ROOT / ".ci/run").read_text().splitlines() if "pytest" in line]
    assert ci == steps


def test_every_pure_path_exists_and_the_pass_covers_generation_engine_and_server():
    missing = [path for path in PURE_PATHS if not (ROOT / path).exists()]
    assert not missing, f"tests/conftest.py PURE_PATHS names paths that are gone: {missing}"
    for area in ("tests/unit/engine/", "tests/unit/server/", "tests/unit/test_generate.py"):
        assert any(path.startswith(area) for path in PURE_PATHS)
