"""Optional C++ kernels for CPU inference, compiled on first use with `torch.utils.cpp_extension`.

One library built from every source in `csrc/`, registered under `torch.ops.lmforge`:
- `paged_attention` (csrc/paged_attention.cpp): attention that reads the engine's paged KV cache in place;
- `rms_norm`, `rope_`, `silu_mul` (csrc/fused_ops.cpp): the small element-wise steps of a decoder layer, each one
  pass over memory instead of several eager ops (used by lmforge.model.inference); `argmax_rows`, torch.argmax over
  the last dimension of float32 rows, 8x faster than torch's on a vocabulary (used by lmforge.engine.sampling);
- `pack_linear_bf16`, `linear_bf16`, `silu_gated_linear_bf16` (csrc/linear_bf16.cpp): bf16 linears by the
  AVX512-BF16 dot product, on CPUs that have it, and SwiGLU's gate/up projection with its activation;
  `pack_linear_f32`, `linear_f32`, `silu_gated_linear_f32` (csrc/linear_f32.cpp): the same for float32 by FMA, used
  on AVX-512 CPUs (both used by lmforge.model.inference).
It needs a C++ compiler (g++ or clang) at run time; the build takes 20-40 s once per machine and is cached under
`~/.cache/torch_extensions/lmforge` (or under `$TORCH_EXTENSIONS_DIR`). Without a compiler, or with
`LMFORGE_CPU_KERNELS=0`, callers keep their pure-PyTorch code, which computes the same thing (the tests compare the
two).
"""

import functools
import hashlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from lmforge.common.hardware import cpu_flags

log = logging.getLogger(__name__)

CSRC = Path(__file__).parent / "csrc"
SOURCES = sorted(CSRC.glob("*.cpp"))
DISABLE_VAR = "LMFORGE_CPU_KERNELS"


def vector_width() -> str:
    """The width ATen's Vectorized<float> gets in lmforge's build for this CPU, as torch's own CPU kernels choose it:
    "AVX512" (needs the F, BW, VL and DQ subsets), "AVX2" (with FMA) or "DEFAULT" (plain C++)."""
    flags = cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "AVX512"
    return "AVX2" if {"avx2", "fma"} <= flags else "DEFAULT"


def _compile_flags() -> list[str]:
    """Optimised for this CPU, with ATen's Vectorized<float> at the widest width it supports."""
    capability = vector_width()
    defines = [f"-DCPU_CAPABILITY={capability}"] + ([f"-DCPU_CAPABILITY_{capability}"] if capability != "DEFAULT"
                                                   else [])
    return ["-O3", "-march=native", "-fopenmp", *defines]


def _build_name(flags: list[str]) -> str:
    """Unique per source text, torch version and CPU: -march=native code must not be reused on a machine lacking its
    instructions, nor a library built against another torch's headers."""
    key = " ".join([torch.__version__, *sorted(cpu_flags()), *flags])
    sources = b"".join(path.read_bytes() for path in sorted(CSRC.iterdir()) if path.suffix in (".cpp", ".h"))
    digest = hashlib.sha256(sources + key.encode()).hexdigest()
    return f"lmforge_cpu_{digest[:12]}"


def _build_dir(name: str) -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / "lmforge" / name


@functools.cache
def cpu_ops() -> object | None:
    """The `torch.ops.lmforge` namespace, built if needed; None when disabled or when it cannot be built."""
    if os.environ.get(DISABLE_VAR, "1") == "0":
        return None
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        log.warning("no C++ compiler found: lmforge runs its PyTorch code instead of its CPU kernels (slower); "
                    "install g++ to build them")
        return None
    from torch.utils.cpp_extension import load

    flags = _compile_flags()
    name = _build_name(flags)
    build_dir = _build_dir(name)
    built = (build_dir / f"{name}.so").exists()
    if not built:  # a silent pause of half a minute on the first run would look like a hang
        print("lmforge: compiling the CPU kernels for this machine (once, about 20-40 s) ...",
              file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        load(name=name, sources=[str(path) for path in SOURCES], extra_cflags=flags, extra_ldflags=["-fopenmp"],
             build_directory=str(build_dir), is_python_module=False, verbose=False)
        if not built:
            print(f"lmforge: kernels compiled in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    except Exception as exc:  # a broken toolchain must not stop anything: the PyTorch code computes the same
        log.warning("could not build lmforge's CPU kernels (%s: %s); lmforge runs its PyTorch code instead",
                    type(exc).__name__, str(exc).strip().splitlines()[-1] if str(exc).strip() else "")
        return None
    return torch.ops.lmforge


def loaded_ops() -> object | None:
    """`torch.ops.lmforge` if an earlier `cpu_ops()` call built or loaded it, else None: never starts a build (for
    small steps, such as sampling's argmax, that must not pause a program that has not asked for the kernels)."""
    return cpu_ops() if cpu_ops.cache_info().currsize else None


def f32_linear_ops() -> object | None:
    """torch.ops.lmforge when its float32 linear kernel runs on this CPU (an AVX-512 build: at AVX2 width it measured
    slower than oneDNN for prompts), else None."""
    ops = cpu_ops()
    return ops if ops is not None and vector_width() == "AVX512" else None


@functools.cache
def bf16_linear_ops() -> object | None:
    """torch.ops.lmforge when its bf16 linear kernel runs on this CPU (AVX512-BF16, and a compiler that emits it),
    else None."""
    ops = cpu_ops()
    if ops is None or "avx512_bf16" not in cpu_flags():
        return None
    try:
        weight = torch.ones(3, 4, dtype=torch.bfloat16)
        out = ops.linear_bf16(torch.ones(2, 4, dtype=torch.bfloat16), ops.pack_linear_bf16(weight), None, 3)
    except RuntimeError:  # built without the instructions (an old compiler)
        return None
    return ops if torch.equal(out, torch.full((2, 3), 4.0, dtype=torch.bfloat16)) else None

