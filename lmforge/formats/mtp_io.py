"""Saving and loading the multi-token-prediction modules (DeepSeek-V3 MTP, mtp.py) beside a Hugging Face directory.

They go to their own file, `mtp.safetensors`, named as DeepSeek-V3 names its MTP layer: depth k is layer
`model.layers.{n_layers + k}` with enorm / hnorm / eh_proj / shared_head.norm and the usual block tensors. A separate
file keeps model.safetensors exactly what transformers expects; a directory without it loads with no MTP (None).
"""

import re
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf import state_dict_from_hf, state_dict_to_hf
from lmforge.formats.weights import assign_state_dict, load_weights_file, save_weights_file
from lmforge.model.config import ModelConfig
from lmforge.model.meta_init import on_meta
from lmforge.model.mtp import MultiTokenPrediction

MTP_FILE = "mtp.safetensors"
_OWN = ("enorm.", "hnorm.", "eh_proj.", "shared_head.norm.")  # DeepSeek-V3 names; lmforge calls the last "norm."
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def mtp_state_to_hf(mtp: MultiTokenPrediction, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """DeepSeek-V3 names for every MTP tensor; block tensors go through the family's name table as layer 0."""
    out = {}
    for k, module in enumerate(mtp.depths):
        prefix = f"model.layers.{cfg.n_layers + k}."
        state = module.state_dict()
        block = {f"layers.0.{name.removeprefix('block.')}": t for name, t in state.items() if name.startswith("block.")}
        for name, tensor in state_dict_to_hf(block, cfg).items():
            out[prefix + name.removeprefix("model.layers.0.")] = tensor
        for name, tensor in state.items():
            if not name.startswith("block."):
                out[prefix + ("shared_head." + name if name.startswith("norm.") else name)] = tensor
    return out


def mtp_state_from_hf(hf_state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The inverse: lmforge names `depths.{k}.…` of a MultiTokenPrediction."""
    by_depth: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in hf_state.items():
        match = _LAYER.match(name)
        if not match or int(match.group(1)) < cfg.n_layers:
            raise LmforgeError(f"unexpected tensor {name!r} in {MTP_FILE}: expected model.layers.{{i}}.* with "
                               f"i >= n_layers ({cfg.n_layers})")
        by_depth.setdefault(int(match.group(1)) - cfg.n_layers, {})[match.group(2)] = tensor
    if sorted(by_depth) != list(range(len(by_depth))):
        raise LmforgeError(f"{MTP_FILE} holds MTP layers {sorted(by_depth)}; expected consecutive layers from "
                           f"{cfg.n_layers}")
    state = {}
    for k, tensors in by_depth.items():
        block = {}
        for name, tensor in tensors.items():
            if name.startswith(_OWN):
                state[f"depths.{k}.{name.removeprefix('shared_head.')}"] = tensor
            else:
                block[f"model.layers.0.{name}"] = tensor
        for name, tensor in state_dict_from_hf(block, cfg).items():
            state[f"depths.{k}.block.{name.removeprefix('layers.0.')}"] = tensor
    return state


def save_mtp(mtp: MultiTokenPrediction, directory: str | Path, dtype: torch.dtype | None = None) -> None:
    cfg = mtp.config
    state = mtp_state_to_hf(mtp, cfg)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    save_weights_file(state, Path(directory) / MTP_FILE,
                      metadata={"format": "pt", "n_mtp_modules": str(len(mtp.depths))})


def load_mtp(directory: str | Path, cfg: ModelConfig,
             dtype: torch.dtype = torch.float32) -> MultiTokenPrediction | None:
    """The MTP modules saved in `directory` (their count read from the file), or None when it has none."""
    path = Path(directory) / MTP_FILE
    if not path.is_file():
        return None
    state = mtp_state_from_hf(load_weights_file(path), cfg)
    depths = len({name.split(".")[1] for name in state})
    with on_meta():
        mtp = MultiTokenPrediction(cfg.replace(n_mtp_modules=depths))
    assign_state_dict(mtp, state, source=str(path))
    return mtp.to(dtype).eval()
