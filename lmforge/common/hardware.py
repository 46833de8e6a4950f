"""What this CPU can do fast, through torch's public API, on any OS.

Sources, most trusted first: `torch.backends.cpu.get_cpu_capability()` (the vector width ATen's own kernels dispatch
to: "AVX512", "AVX2", "DEFAULT", "SVE256"...), `torch.cpu.get_capabilities()` (instruction-set flags read by the
cpuinfo library: AVX512-BF16, AMX...), then /proc/cpuinfo on Linux for the vendor and any flag torch does not list.
Where none answers, the answers are the cautious ones (no flags, vendor ''). torch is imported on first call only:
`lmforge --help` must not load it.

bf16 is fast on a CPU only with native bf16 instructions (AMX or AVX512-BF16): without them PyTorch emulates bf16
matmuls, and on a 2-core AVX2 EPYC a 2048-cube bf16 matmul ran at 1.9 GFLOP/s against fp32's 101 (53x slower).
"""

from functools import cache

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# torch.cpu.get_capabilities() names -> the /proc/cpuinfo spelling lmforge uses (the others are spelled alike)
TORCH_FLAG_NAMES = {"avx512_f": "avx512f", "avx512_bw": "avx512bw", "avx512_vl": "avx512vl", "avx512_dq": "avx512dq",
                    "avx512_cd": "avx512cd", "avx512_ifma": "avx512ifma", "avx512_vbmi": "avx512vbmi", "fma3": "fma"}
VENDORS = {"amd": "AuthenticAMD", "intel": "GenuineIntel"}


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
    except OSError:  # not Linux
        return {}


@cache
def _torch_cpu_features() -> dict:
    """torch.cpu.get_capabilities() as a dict ({} on a torch without it)."""
    import torch

    get = getattr(torch.cpu, "get_capabilities", None)
    try:
        return dict(get()) if get is not None else {}
    except RuntimeError:
        return {}


def cpu_capability() -> str:
    """The vector width ATen dispatches its CPU kernels to ("AVX512", "AVX2", "DEFAULT", "SVE256"...)."""
    import torch

    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return "DEFAULT"


def cpu_flags() -> frozenset[str]:
    """Instruction-set flags in /proc/cpuinfo's spelling ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_bf16'...):
    those torch reports, plus those /proc/cpuinfo lists on Linux; empty where nothing is known."""
    from_torch = {TORCH_FLAG_NAMES.get(name, name) for name, value in _torch_cpu_features().items() if value is True}
    return frozenset(from_torch | set(_cpuinfo_first_cpu().get("flags", "").split()))


def cpu_vendor() -> str:
    """The x86 vendor string ('GenuineIntel', 'AuthenticAMD'): /proc/cpuinfo's, else read from the CPU name torch
    reports; '' where neither says."""
    vendor = _cpuinfo_first_cpu().get("vendor_id", "")
    if vendor:
        return vendor
    name = str(_torch_cpu_features().get("cpu_name", "")).lower()
    return next((full for short, full in VENDORS.items() if short in name), "")


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AMX or AVX512-BF16), where bf16 beats fp32 on CPU."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def cpu_summary() -> dict[str, object]:
    """What `lmforge info` shows about the CPU."""
    features = _torch_cpu_features()
    flags = cpu_flags()
    return {"name": features.get("cpu_name") or _cpuinfo_first_cpu().get("model name", ""),
            "architecture": features.get("architecture", ""), "vendor": cpu_vendor(), "capability": cpu_capability(),
            "avx512_bf16": "avx512_bf16" in flags, "amx": "amx_bf16" in flags}


def slow_bf16_note() -> str:
    """One line for users and benchmark reports about bf16 on a CPU without native bf16."""
    return ("this CPU has no native bf16 (AMX or AVX512-BF16): PyTorch emulates bf16 matmuls here, many times "
            "slower than float32")
