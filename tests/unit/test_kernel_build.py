"""The C++ kernels degrade visibly: a failed build warns once with the compiler's error and is not retried (until
LMFORGE_CPU_KERNELS=rebuild); `lmforge info` shows their state without building and the backend each dtype gets;
hardware facts come from torch's API, so a capability can be injected."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from lmforge.cli import kernel_info
from lmforge.common import hardware
from lmforge.kernels import build_state, cpu_kernels
from lmforge.model.inference import KernelLinear, prepare_for_inference
from lmforge.model.packed_linear import PackedLinear

LOAD = "from lmforge.kernels import cpu_kernels; print(cpu_kernels.cpu_ops() is not None)"


def run(code_or_cli: list[str], **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("CXX", build_state.ENV_VAR)}
    return subprocess.run([sys.executable, *code_or_cli], capture_output=True, text=True, timeout=120,
                          env={**environ, **env})


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_a_failed_build_warns_once_is_remembered_and_retried_only_on_request(tmp_path):
    env = {"CXX": "/bin/false", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    first = run(["-c", LOAD], **env)
    assert first.returncode == 0 and first.stdout.strip() == "False", first.stderr
    [warning] = warnings(first.stderr)
    assert "could not build lmforge's CPU kernels: `/bin/false --version` exited with status 1" in warning
    assert "pure-PyTorch path" in warning and "LMFORGE_CPU_KERNELS=rebuild" in warning
    assert "Traceback" not in first.stderr and "ninja" not in first.stderr
    [marker] = tmp_path.glob(f"lmforge/*/{build_state.MARKER}")
    assert json.loads(marker.read_text())["compiler"] == "/bin/false"

    second = run(["-c", LOAD], **env)  # no retry: no "compiling" line, the same one reason
    assert second.stdout.strip() == "False" and "compiling" not in second.stderr
    assert [line for line in second.stderr.splitlines() if line.strip()] == warnings(second.stderr)
    [again] = warnings(second.stderr)
    assert "failed to build on an earlier run (`/bin/false --version` exited with status 1); not retrying" in again

    retry = run(["-c", LOAD], **env, LMFORGE_CPU_KERNELS="rebuild")
    assert "compiling the CPU kernels" in retry.stderr and "could not build" in retry.stderr


def test_the_error_line_is_the_compilers_not_ninjas():
    ninja = RuntimeError("Error building extension 'lmforge_cpu_x': [1/5] c++ -c fused_ops.cpp -o fused_ops.o\n"
                         "FAILED: fused_ops.o\nc++ -c fused_ops.cpp -o fused_ops.o\nIn file included from x.h:3:\n"
                         "fused_ops.cpp:12:5: error: 'bar' was not declared in this scope\n"
                         "ninja: build stopped: subcommand failed.\n")
    assert build_state.first_error_line(ninja) == "fused_ops.cpp:12:5: error: 'bar' was not declared in this scope"
    clang = RuntimeError("FAILED: a.o\nclang: error: unsupported option '-fopenmp'\nninja: build stopped")
    assert build_state.first_error_line(clang) == "clang: error: unsupported option '-fopenmp'"


def test_a_failure_is_remembered_for_its_compiler_only(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "/bin/false")
    build_state.remember_failure(tmp_path, RuntimeError("x.cpp:1:1: error: boom"))
    assert build_state.remembered_failure(tmp_path) == "x.cpp:1:1: error: boom"
    monkeypatch.setenv("CXX", "g++")  # another compiler gets its own try
    assert build_state.remembered_failure(tmp_path) is None


def info(*args: str, **env: str) -> subprocess.CompletedProcess:
    return run(["-m", "lmforge", "info", *args], **env)


def kernel_lines(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if line.strip().startswith(("kernels:", "linear "))]


def test_info_shows_each_state_and_never_builds(tmp_path):
    fresh = info(TORCH_EXTENSIONS_DIR=str(tmp_path))
    assert fresh.returncode == 0, fresh.stderr
    assert "kernels: not built yet: builds on first use (~30 s)" in kernel_lines(fresh.stdout)
    assert fresh.stderr == "" and not list(tmp_path.rglob("*.o"))  # nothing compiled

    disabled = info(LMFORGE_CPU_KERNELS="0")
    lines = kernel_lines(disabled.stdout)
    assert "kernels: disabled by LMFORGE_CPU_KERNELS=0 (pure-PyTorch path)" in lines
    assert not any("lmforge kernel (" in line for line in lines)

    run(["-c", LOAD], CXX="/bin/false", TORCH_EXTENSIONS_DIR=str(tmp_path))
    failed = info("--json", CXX="/bin/false", TORCH_EXTENSIONS_DIR=str(tmp_path))
    facts = json.loads(failed.stdout)
    assert facts["kernels"]["state"] == "build failed" and failed.stderr == ""
    assert "build failed: `/bin/false --version` exited with status 1" in facts["kernels"]["detail"]
    assert "LMFORGE_CPU_KERNELS=rebuild" in facts["kernels"]["detail"]
    assert all(not backend.startswith("lmforge kernel") for backend in facts["linear"].values())


def test_info_shows_the_built_library(ops):
    built = info()
    [kernels] = [line for line in kernel_lines(built.stdout) if line.startswith("kernels:")]
    assert kernels.startswith("kernels: built (") and kernels.endswith(".so)")
    assert os.path.exists(kernels.removeprefix("kernels: built (").removesuffix(")"))


@pytest.fixture
def ops():
    ops = cpu_kernels.cpu_ops()
    if ops is None:
        pytest.skip(f"the kernels are not available here: {cpu_kernels.kernel_state().describe()}")
    return ops


@pytest.mark.parametrize("enabled", [True, False])
def test_info_names_the_backend_prepare_for_inference_installs(enabled, monkeypatch):
    if not enabled:
        monkeypatch.setenv(build_state.ENV_VAR, "0")
    cpu_kernels.cpu_ops.cache_clear()
    cpu_kernels.bf16_linear_ops.cache_clear()
    try:
        backends = kernel_info.linear_backends()
        for dtype in (torch.bfloat16, torch.float32):
            model = nn.Sequential(nn.Linear(64, 32)).to(dtype)
            prepare_for_inference(model)
            expected = {KernelLinear: "lmforge kernel", PackedLinear: "oneDNN packed", nn.Linear: "torch F.linear"}
            assert backends[str(dtype).removeprefix("torch.")].startswith(expected[type(model[0])])
    finally:
        cpu_kernels.cpu_ops.cache_clear()
        cpu_kernels.bf16_linear_ops.cache_clear()


def inject(monkeypatch, capability: str, features: dict, cpuinfo: dict | None = None) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(hardware, "_torch_cpu_features", lambda: features)
    monkeypatch.setattr(hardware, "_cpuinfo_first_cpu", lambda: cpuinfo or {})  # {}: not Linux


@pytest.mark.parametrize("capability, features, width, bf16_kernel, f32_kernel", [
    ("DEFAULT", {"architecture": "x86_64"}, "DEFAULT", False, False),
    ("AVX2", {"avx2": True, "fma3": True}, "AVX2", False, False),
    ("AVX512", {"avx512_f": True, "avx512_bw": True}, "AVX512", False, True),
    ("AVX512", {"avx512_f": True, "avx512_bf16": True}, "AVX512", True, True),
    ("AVX512", {"avx512_f": True, "avx512_bf16": True, "amx_bf16": True, "amx_tile": True}, "AVX512", True, True),
    ("SVE256", {"architecture": "arm64", "sve": True, "bf16": True}, "DEFAULT", False, False),
])
def test_hardware_comes_from_torch_and_decides_the_build_and_backends(monkeypatch, capability, features, width,
                                                                    bf16_kernel, f32_kernel):
    inject(monkeypatch, capability, features)
    assert build_state.vector_width() == width
    assert f"-DCPU_CAPABILITY={width}" in build_state.compile_flags()
    assert hardware.cpu_has_native_bf16() == ("avx512_bf16" in features or "amx_bf16" in features)
    backends = kernel_info.linear_backends(build_state.KernelState("not built"))
    assert backends["bfloat16"].startswith("lmforge kernel") == bf16_kernel
    assert backends["float32"].startswith("lmforge kernel") == f32_kernel


def test_off_linux_flags_and_vendor_come_from_torch_and_procfs_adds_to_them(monkeypatch):
    inject(monkeypatch, "AVX2", {"avx2": True, "fma3": True, "avx512_f": False, "cpu_name": "Intel Core i7",
                                 "l2_cache_size": 1048576})
    assert hardware.cpu_flags() == {"avx2", "fma"} and hardware.cpu_vendor() == "GenuineIntel"
    assert hardware.cpu_summary()["capability"] == "AVX2"
    inject(monkeypatch, "AVX2", {"avx2": True}, {"vendor_id": "AuthenticAMD", "flags": "avx2 amx_bf16"})
    assert hardware.cpu_vendor() == "AuthenticAMD" and "amx_bf16" in hardware.cpu_flags()
    inject(monkeypatch, "DEFAULT", {})
    assert hardware.cpu_flags() == frozenset() and hardware.cpu_vendor() == ""
