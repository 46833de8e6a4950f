"""Optional C++ kernels for CPU inference, compiled on first use with `torch.utils.cpp_extension`.

One library built from every source in `csrc/`, registered under `torch.ops.lmforge`:
- `paged_attention` (csrc/paged_attention.cpp): attention that reads the engine's paged KV cache in place;
- `rms_norm`, `rope_`, `silu_mul` (csrc/fused_ops.cpp): the small element-wise steps of a decoder layer, each one
  pass over memory instead of several eager ops (used by lmforge.model.inference); `argmax_rows`, torch.argmax over
  the last dimension of float32 rows, 8x faster than torch's on a vocabulary (used by lmforge.generation.sampling);
- `pack_linear_bf16`, `linear_bf16`, `silu_gated_linear_bf16` (csrc/linear_bf16.cpp): bf16 linears by the
  AVX512-BF16 dot product, on CPUs that have it, and SwiGLU's gate/up projection with its activation;
  `pack_linear_f32`, `linear_f32`, `silu_gated_linear_f32` (csrc/linear_f32.cpp): the same for float32 by FMA, used
  on AVX-512 CPUs (both used by lmforge.model.inference);
- `pack_linear_int8`, `linear_int8` (csrc/linear_int8.cpp), `pack_linear_int4`, `pack_int4_scales`, `linear_int4`
  (csrc/linear_int4.cpp), `quant_linear_isa`: int8 / group-wise int4 linears with the codes dequantized in registers,
  AVX-512 or AVX2 chosen at run time (used by lmforge.quant's Int8Linear / Int4Linear through quant_linear.py).
It needs a C++ compiler (g++ or clang) the first time: the build takes 20-40 s once per machine and is cached under
`~/.cache/torch_extensions/lmforge` (or under `$TORCH_EXTENSIONS_DIR`); later runs load the library without a
compiler. Without a compiler, with `LMFORGE_CPU_KERNELS=0`, or when the build fails, callers keep their pure-PyTorch
code, which computes the same thing (the tests compare the two). A failed build prints one warning with the
compiler's first error line and is remembered (build_state.py): later commands say so in one line instead of
building again, until `LMFORGE_CPU_KERNELS=rebuild`.
"""

import functools
import logging
import sys
import time

import torch

from lmforge.common.hardware import cpu_flags
from lmforge.kernels import build_state
from lmforge.kernels.build_state import ENV_VAR as DISABLE_VAR
from lmforge.kernels.build_state import kernel_state, vector_width

__all__ = ["DISABLE_VAR", "bf16_linear_ops", "cpu_ops", "f32_linear_ops", "kernel_state", "loaded_ops", "vector_width"]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _build(directory) -> None:
    """Compile (or bring up to date) and load the library, torch's compiler-compatibility notice silenced: a failure
    is reported by our own one line."""
    from torch.utils.cpp_extension import load

    torch_log = logging.getLogger("torch.utils.cpp_extension")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        load(name=directory.name, sources=[str(path) for path in build_state.SOURCES],
             extra_cflags=build_state.compile_flags(), extra_ldflags=["-fopenmp"], build_directory=str(directory),
             is_python_module=False, verbose=False)
    finally:
        torch_log.setLevel(level)


@functools.cache
def cpu_ops() -> object | None:
    """The `torch.ops.lmforge` namespace, built if needed; None when disabled or when it cannot be built (one warning
    on stderr saying why, and that lmforge continues on its pure-PyTorch path)."""
    if build_state.env_mode() == "rebuild":
        build_state.forget_failure(build_state.build_dir(build_state.build_name(build_state.compile_flags())))
    state = kernel_state()
    fallback = "lmforge continues on its pure-PyTorch path (same results, slower)"
    if state.status == "disabled":
        return None
    if state.status == "built" and not (state.directory / "lock").exists():  # torch's lock: another process builds
        try:  # up to date by construction (the directory is named by the sources' hash)
            torch.ops.load_library(str(build_state.library_path(state.directory)))
            return torch.ops.lmforge
        except OSError:  # a library another process is still linking: wait for it through torch's lock below
            pass
    if state.status == "build failed":
        _warn(f"lmforge's CPU kernels failed to build on an earlier run ({state.detail}); not retrying: {fallback} "
              f"({build_state.RETRY_HINT})")
        return None
    if state.status == "no compiler":
        _warn(f"no C++ compiler found ({build_state.compiler()} is not on PATH; install g++ or clang): "
              f"{fallback}")
        return None
    # a silent pause of half a minute on the first run would look like a hang
    print("lmforge: compiling the CPU kernels for this machine (once, about 20-40 s) ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        _build(state.directory)
    except Exception as exc:  # a broken toolchain must not stop anything: the PyTorch code computes the same
        line = build_state.remember_failure(state.directory, exc)
        _warn(f"could not build lmforge's CPU kernels: {line}; {fallback}. This failure is remembered: later "
              f"commands skip the build ({build_state.RETRY_HINT})")
        return None
    print(f"lmforge: kernels compiled in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
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

