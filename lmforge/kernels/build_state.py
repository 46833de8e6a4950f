"""Where lmforge's CPU kernels stand on this machine, found without building anything, and the memory of a failed
build.

The library is built into a directory named by a hash of the C++ sources, torch's version, the CPU's flags and the
compile flags (`build_dir`). A build that fails leaves a `BUILD_FAILED` file there (JSON: the compiler and the first
compiler error line): the next command run with the same compiler does not spend another 20-40 s on the same failure
but says in one line why the kernels are off. `LMFORGE_CPU_KERNELS=rebuild` forgets the failure and builds again
(so does deleting the file); new sources, another torch or another compiler (CXX) try again by themselves.
"""

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lmforge.common.hardware import cpu_capability, cpu_flags

CSRC = Path(__file__).parent / "csrc"
SOURCES = sorted(CSRC.glob("*.cpp"))
ENV_VAR = "LMFORGE_CPU_KERNELS"  # "0": off; "rebuild": forget a failed build and try again; else on
MARKER = "BUILD_FAILED"
RETRY_HINT = f"{ENV_VAR}=rebuild retries the build"
NOT_BUILT_NOTE = "not built yet: builds on first use (~30 s)"
_NOISE = ("Error building extension", "FAILED:", "ninja:", "[")  # ninja's lines around the compiler's own


def env_mode() -> str:
    """'off' (LMFORGE_CPU_KERNELS=0), 'rebuild' or 'on'."""
    value = os.environ.get(ENV_VAR, "1").strip().lower()
    return "off" if value == "0" else "rebuild" if value == "rebuild" else "on"


def compiler() -> str:
    """The C++ compiler torch's extension builder runs: $CXX, else c++."""
    return os.environ.get("CXX") or "c++"


def vector_width() -> str:
    """The width ATen's Vectorized<float> gets in lmforge's build, the one torch's own CPU kernels dispatch to here:
    "AVX512", "AVX2" or "DEFAULT" (plain C++; also every non-x86 CPU)."""
    capability = cpu_capability()
    return capability if capability in ("AVX512", "AVX2") else "DEFAULT"


def compile_flags() -> list[str]:
    """Optimised for this CPU, with ATen's Vectorized<float> at the widest width it supports."""
    capability = vector_width()
    defines = [f"-DCPU_CAPABILITY={capability}"] + ([f"-DCPU_CAPABILITY_{capability}"] if capability != "DEFAULT"
                                                   else [])
    return ["-O3", "-march=native", "-fopenmp", *defines]


def build_name(flags: list[str]) -> str:
    """Unique per source text, torch version and CPU: -march=native code must not be reused on a machine lacking its
    instructions, nor a library built against another torch's headers."""
    import torch

    key = " ".join([torch.__version__, *sorted(cpu_flags()), *flags])
    sources = b"".join(path.read_bytes() for path in sorted(CSRC.iterdir()) if path.suffix in (".cpp", ".h"))
    digest = hashlib.sha256(sources + key.encode()).hexdigest()
    return f"lmforge_cpu_{digest[:12]}"


def build_dir(name: str) -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / "lmforge" / name


def library_path(directory: Path) -> Path:
    return directory / f"{directory.name}.so"


def first_error_line(exc: BaseException) -> str:
    """The line of a failed build a user needs: the compiler's first `error:` line, not ninja's "build stopped"."""
    if isinstance(exc, subprocess.CalledProcessError):  # torch runs `$CXX --version` before ninja
        command = " ".join(map(str, exc.cmd)) if isinstance(exc.cmd, list | tuple) else str(exc.cmd)
        return f"`{command}` exited with status {exc.returncode}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "error:" in line.lower():
            return line[:300]
    quiet = [line for line in lines if not line.startswith(_NOISE) and not line.startswith(compiler())]
    return (quiet or lines or [type(exc).__name__])[0][:300]


def remember_failure(directory: Path, exc: BaseException) -> str:
    """Write the failure marker; returns the error line it holds."""
    line = first_error_line(exc)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MARKER).write_text(json.dumps({"compiler": compiler(), "error": line}) + "\n")
    except OSError:  # a read-only cache: the failure is only not remembered
        pass
    return line


def remembered_failure(directory: Path) -> str | None:
    """The error line of an earlier failed build with the same compiler, or None."""
    try:
        record = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return str(record.get("error", "")) if record.get("compiler") == compiler() else None


def forget_failure(directory: Path) -> None:
    (directory / MARKER).unlink(missing_ok=True)


@dataclass(frozen=True)
class KernelState:
    """status: 'built', 'not built', 'disabled', 'no compiler' or 'build failed'; detail: the error line."""

    status: str
    directory: Path | None = None
    detail: str = ""

    def describe(self) -> str:
        """One line for `lmforge info`."""
        if self.status == "built":
            return f"built ({library_path(self.directory)})"
        if self.status == "disabled":
            return f"disabled by {ENV_VAR}=0 (pure-PyTorch path)"
        if self.status == "no compiler":
            return f"unavailable: no C++ compiler ({compiler()} not found; install g++ or clang)"
        if self.status == "build failed":
            return f"unavailable: build failed: {self.detail} ({RETRY_HINT}; marker {self.directory / MARKER})"
        return NOT_BUILT_NOTE


def kernel_state() -> KernelState:
    """The kernels' state on this machine, without building or loading anything."""
    if env_mode() == "off":
        return KernelState("disabled")
    directory = build_dir(build_name(compile_flags()))
    if library_path(directory).exists():
        return KernelState("built", directory)
    failure = remembered_failure(directory) if env_mode() != "rebuild" else None
    if failure is not None:
        return KernelState("build failed", directory, failure)
    if shutil.which(compiler()) is None:
        return KernelState("no compiler", directory)
    return KernelState("not built", directory)
