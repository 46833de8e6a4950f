"""What this CPU can do fast, read from /proc/cpuinfo (Linux; elsewhere the answers are the cautious ones).

bf16 is fast on a CPU only with native bf16 instructions (AMX or AVX512-BF16): without them PyTorch emulates bf16
matmuls, and on a 2-core AVX2 EPYC a 2048-cube bf16 matmul ran at 1.9 GFLOP/s against fp32's 101 (53x slower).
"""

from functools import cache

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor's fields of a /proc/cpuinfo text (all cores of a machine share one model)."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


@cache
def _cpuinfo_first_cpu() -> dict[str, str]:
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return {}


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of the first CPU ('avx2', 'avx512_bf16', 'amx_bf16'...), empty where unknown."""
    return frozenset(_cpuinfo_first_cpu().get("flags", "").split())


def cpu_vendor() -> str:
    """The x86 vendor string ('GenuineIntel', 'AuthenticAMD'), or '' where /proc/cpuinfo does not say."""
    return _cpuinfo_first_cpu().get("vendor_id", "")


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AMX or AVX512-BF16), where bf16 beats fp32 on CPU."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def slow_bf16_note() -> str:
    """One line for users and benchmark reports about bf16 on a CPU without native bf16."""
    return ("this CPU has no native bf16 (AMX or AVX512-BF16): PyTorch emulates bf16 matmuls here, many times "
            "slower than float32")
