"""`lmforge info`: what this installation has — versions, threads, presets and the embedded model."""

import json
import platform

import typer

import lmforge
from lmforge.common.paths import INSTALL_HINT, embedded_model_path
from lmforge.common.threads import wait_policy


def collect_info() -> dict:
    import torch

    from lmforge.model.presets import preset_names

    embedded = embedded_model_path()
    return {
        "lmforge": lmforge.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "wait_policy": wait_policy(),
        "cuda": torch.cuda.is_available(),
        "presets": preset_names(),
        "embedded_model": str(embedded) if embedded else None,
    }


def info(as_json: bool = typer.Option(False, "--json", help="Print the facts as one JSON object.")) -> None:
    """Show the lmforge and torch versions, CPU threads and their wait policy, model presets and whether the embedded
    model is found."""
    facts = collect_info()
    if as_json:
        print(json.dumps(facts))
        return
    for key, value in facts.items():
        if key == "presets":
            value = ", ".join(value)
        if key == "embedded_model" and value is None:
            value = f"not found (install it with: {INSTALL_HINT})"
        print(f"{key:>15}: {value}")
