"""`lmforge info`: what this installation has — versions, threads, presets, the embedded model, the CPU, the state of
the C++ kernels (never built by this command) and the linear backend each dtype gets."""

import json
import platform

import typer

import lmforge
from lmforge.common.paths import INSTALL_HINT, embedded_model_path
from lmforge.common.threads import thread_policy, wait_policy


def collect_info() -> dict:
    import torch

    from lmforge.cli.kernel_info import kernel_facts
    from lmforge.model.presets import preset_names

    embedded = embedded_model_path()
    policy = thread_policy()  # starts the governor: LMFORGE_THREADS=N pins before the count is read
    return {
        "lmforge": lmforge.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "thread_policy": policy,
        "wait_policy": wait_policy(),
        "cuda": torch.cuda.is_available(),
        "presets": preset_names(),
        "embedded_model": str(embedded) if embedded else None,
        **kernel_facts(),
    }


def info(as_json: bool = typer.Option(False, "--json", help="Print the facts as one JSON object.")) -> None:
    """Show the lmforge and torch versions, CPU threads (how many, how that count adapts to the load, how idle ones
    wait), model presets, whether the embedded
    model is found, the CPU, the C++ kernels' state (built, not built yet, disabled by LMFORGE_CPU_KERNELS=0, or
    unavailable and why; this command never builds them) and the linear backend per dtype."""
    facts = collect_info()
    if as_json:
        print(json.dumps(facts))
        return
    for key, value in facts.items():
        if key == "presets":
            value = ", ".join(value)
        if key == "embedded_model" and value is None:
            value = f"not found (install it with: {INSTALL_HINT})"
        if key == "cpu":
            value = (f"{value['name'] or 'unknown'} ({value['architecture'] or '?'}), ATen capability "
                     f"{value['capability']}, AVX512-BF16 {'yes' if value['avx512_bf16'] else 'no'}, "
                     f"AMX {'yes' if value['amx'] else 'no'}")
        if key == "kernels":
            value = value["detail"]
        if key == "linear":
            for dtype, backend in value.items():
                print(f"{'linear ' + dtype:>15}: {backend}")
            continue
        print(f"{key:>15}: {value}")
