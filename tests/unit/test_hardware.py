"""CPU feature detection from /proc/cpuinfo (the secondary source; torch's API is tested in test_kernel_build.py) and
the warning for bf16 on a CPU that only emulates it."""

import pytest

from lmforge.cli import dtype_warning
from lmforge.common import hardware

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2
"""


def test_parse_cpuinfo_reads_the_first_processor():
    info = hardware.parse_cpuinfo(CPUINFO)
    assert info["vendor_id"] == "AuthenticAMD"
    assert info["flags"].split() == ["fpu", "sse2", "avx2", "avx512f", "avx512_bf16"]
    assert hardware.parse_cpuinfo("\n\n" + CPUINFO)["processor"] == "0"  # leading blank lines skipped
    assert hardware.parse_cpuinfo("") == {}


@pytest.mark.parametrize("flags, native", [("avx2 fma", False), ("avx512f avx512bw", False),
                                           ("avx512f avx512_bf16", True), ("amx_tile amx_bf16", True), ("", False)])
def test_native_bf16_needs_amx_or_avx512_bf16(monkeypatch, flags, native):
    monkeypatch.setattr(hardware, "_cpuinfo_first_cpu", lambda: {"flags": flags, "vendor_id": "GenuineIntel"})
    monkeypatch.setattr(hardware, "_torch_cpu_features", lambda: {})  # only what /proc/cpuinfo says
    assert hardware.cpu_has_native_bf16() is native
    assert hardware.cpu_vendor() == "GenuineIntel"


@pytest.mark.parametrize("dtype, device, native, warned", [
    ("bfloat16", "cpu", False, True), ("bf16", "cpu", False, True), ("bfloat16", "cpu", True, False),
    ("float32", "cpu", False, False), ("bfloat16", "cuda", False, False)])
def test_cli_warns_only_for_emulated_bf16(monkeypatch, capsys, dtype, device, native, warned):
    monkeypatch.setattr(dtype_warning, "cpu_has_native_bf16", lambda: native)
    dtype_warning.warn_if_slow_dtype(dtype, device)
    err = capsys.readouterr().err
    assert ("no native bf16" in err and "--dtype float32" in err) if warned else err == ""
