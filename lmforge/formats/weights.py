"""Reading and writing weight files safely: safetensors first, never an arbitrary pickle.

`.bin`/`.pt` checkpoints are opened with `torch.load(weights_only=True)`, which refuses to run code; a file that
needs full unpickling is rejected with a clear message. Loading into a model checks every name and shape.
"""

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.common.files import save_safetensors

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise LmforgeError(f"cannot read safetensors file {path}: {err}") from None
    if path.suffix in PICKLE_SUFFIXES:
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols before refusing; we say it once
                warnings.simplefilter("ignore")
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise LmforgeError(
                f"refusing to load {path}: it is a pickle that torch.load(weights_only=True) rejects "
                f"({first_line}); convert it to safetensors with a tool you trust"
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise LmforgeError(f"{path} does not hold a flat dict of tensors (a state dict)")
        return state
    raise LmforgeError(f"unsupported weights file {path}: expected .safetensors or one of {PICKLE_SUFFIXES}")


def load_weights_dir(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face checkpoint directory (single file or sharded with an index)."""
    directory = Path(directory)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.is_file():
            shards = _index_shards(index)
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_weights_file(directory / shard))
            return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return load_weights_file(directory / name)
    raise LmforgeError(f"no weights in {directory}: expected model.safetensors (or a sharded index)")


def save_weights_file(state: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    """Save as safetensors (mode from the umask); tensors that share memory (tied weights) must be deduplicated
    by the caller."""
    save_safetensors(state, path, metadata=metadata or {"format": "pt"})


def _index_shards(index: Path) -> list[str]:
    """The shard file names a sharded checkpoint's index lists (plain names inside its directory)."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        raise LmforgeError(f"{index} is not a valid index (a JSON object with a 'weight_map' of tensor name -> "
                           f"shard file): {type(err).__name__}: {err}") from None
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise LmforgeError(f"{index} lists shard {shard!r}; shards must be file names in the same directory")
    return shards


def assign_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load `state` into `model` strictly, naming any missing, unexpected or mis-shaped tensor.

    Works for models built on the meta device: parameters are replaced (assign=True), cast to the model's dtype.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise LmforgeError(f"{source} is missing tensor(s): {', '.join(missing[:5])}"
                           + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if unexpected:
        raise LmforgeError(f"{source} has unexpected tensor(s): {', '.join(unexpected[:5])}"
                           + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""))
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise LmforgeError(f"tensor shape mismatch for {name}: {source} has {tuple(tensor.shape)}, "
                               f"the model expects {tuple(expected[name].shape)}")
    dtype = next(iter(expected.values())).dtype
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
