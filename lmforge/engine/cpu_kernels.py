"""Optional C++ kernels for the CPU engine, compiled on first use with `torch.utils.cpp_extension`.

Today one kernel: attention that reads the paged KV cache in place (`csrc/paged_attention.cpp`). It needs a C++
compiler (g++ or clang) at run time; the build takes 10-30 s once per machine and is cached under
`~/.cache/torch_extensions/lmforge` (or under `$TORCH_EXTENSIONS_DIR`). Without a compiler, or with
`LMFORGE_CPU_KERNELS=0`, the engine uses its pure-PyTorch path (gathers, matmuls and SDPA), which computes the same
attention (the tests compare the two).
"""

import functools
import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lmforge.common.hardware import cpu_flags

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "paged_attention.cpp"
DISABLE_VAR = "LMFORGE_CPU_KERNELS"


def _compile_flags() -> list[str]:
    """Optimised for this CPU, with ATen's Vectorized<float> at the widest width it supports (as torch's own CPU
    kernels choose: AVX-512 needs the F, BW, VL and DQ subsets)."""
    flags = cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        capability = "AVX512"
    elif {"avx2", "fma"} <= flags:
        capability = "AVX2"
    else:
        capability = "DEFAULT"
    defines = [f"-DCPU_CAPABILITY={capability}"] + ([f"-DCPU_CAPABILITY_{capability}"] if capability != "DEFAULT"
                                                   else [])
    return ["-O3", "-march=native", "-fopenmp", *defines]


def _build_name(flags: list[str]) -> str:
    """Unique per source text, torch version and CPU: -march=native code must not be reused on a machine lacking its
    instructions, nor a library built against another torch's headers."""
    key = " ".join([torch.__version__, *sorted(cpu_flags()), *flags])
    digest = hashlib.sha256(SOURCE.read_bytes() + key.encode()).hexdigest()
    return f"lmforge_cpu_{digest[:12]}"


def _build_dir(name: str) -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / "lmforge" / name


@functools.cache
def paged_attention_op() -> Callable | None:
    """torch.ops.lmforge.paged_attention, built if needed; None when disabled or when it cannot be built."""
    if os.environ.get(DISABLE_VAR, "1") == "0":
        return None
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        log.warning("no C++ compiler found: the engine uses its PyTorch attention (slower); install g++ "
                    "to build lmforge's CPU kernel")
        return None
    from torch.utils.cpp_extension import load

    flags = _compile_flags()
    name = _build_name(flags)
    build_dir = _build_dir(name)
    built = (build_dir / f"{name}.so").exists()
    if not built:  # a silent pause of half a minute on the first run would look like a hang
        print("lmforge: compiling the CPU paged-attention kernel for this machine (once, about 10-30 s) ...",
              file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        load(name=name, sources=[str(SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
             build_directory=str(build_dir), is_python_module=False, verbose=False)
        if not built:
            print(f"lmforge: kernel compiled in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    except Exception as exc:  # a broken toolchain must not stop the engine: the PyTorch path computes the same
        log.warning("could not build lmforge's CPU kernel (%s: %s); the engine uses its PyTorch attention",
                    type(exc).__name__, str(exc).strip().splitlines()[-1] if str(exc).strip() else "")
        return None
    return torch.ops.lmforge.paged_attention
