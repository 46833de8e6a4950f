"""What a checkpoint must hold for a bitwise-exact resume, turned into safetensors + JSON and back: model
weights (tied aliases stored once), AdamW moments, Python / NumPy / torch (and CUDA) RNG states; and the data
cursor carried over to a different number of ranks.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from lmforge.common.errors import LmforgeError


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared storage (tied embeddings) stored under its first name only."""
    state = model.state_dict()
    aliases = _tied_aliases(model)
    if aliases:
        return {k: v for k, v in state.items() if k not in aliases}
    out, seen = {}, set()
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            out[name] = tensor
    return out


def _tied_aliases(model: nn.Module) -> set[str]:
    """Parameter names that repeat an earlier parameter object (a tied lm_head)."""
    seen, aliases = set(), set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            aliases.add(name)
        seen.add(id(p))
    return aliases


def load_model_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    stored = set(model_tensors(model))
    real_missing = [k for k in missing if k in stored]
    if real_missing or unexpected:
        raise LmforgeError(f"checkpoint does not fit the model: missing {real_missing}, unexpected {unexpected}")


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """optimizer.state_dict() as tensors + JSON (a single process; distributed runs: sharded_checkpoint.py)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                           load=None) -> None:
    """Rebuild the state dict and load it with `load(sd)` (default optimizer.load_state_dict)."""
    state: dict[int, dict] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    (load or optimizer.load_state_dict)({"state": state, "param_groups": groups})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    return tensors, {"python": [version, list(mt), gauss],
                     "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    version, mt, gauss = meta["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def loader_state_for(saved: dict, loader) -> dict:
    """The saved data cursor (rank 0's) for this rank's `loader`, also when the number of ranks changed: the
    PackedLoader deals the rows of one seeded order round-robin to the ranks, so the same global batch
    (batch_size x world_size) reads the same rows on any number of ranks, and a cursor of `position` rows per
    rank is `position x world_size` rows of that order."""
    state = {**saved, "rank": loader.rank}
    old_world, world = saved.get("world_size"), getattr(loader, "world_size", None)
    if old_world == world or "position" not in saved or world is None:
        return state  # the loader itself refuses a cursor of other settings
    old_global, new_global = saved.get("batch_size", 0) * old_world, loader.batch_size * world
    if old_global != new_global:
        raise LmforgeError(f"the checkpoint was saved by {old_world} rank(s) x batch_size {saved.get('batch_size')} "
                           f"(global batch {old_global}); {world} rank(s) x batch_size {loader.batch_size} make "
                           f"{new_global}: resume on {world} rank(s) with batch_size {old_global // world}"
                           if old_global % world == 0 else
                           f"the checkpoint was saved with a global batch of {old_global} rows, which {world} "
                           f"rank(s) cannot split evenly; resume with a number of ranks that divides it")
    return {**state, "world_size": world, "batch_size": loader.batch_size,
            "position": int(saved["position"]) * old_world // world}
