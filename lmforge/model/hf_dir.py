"""Hugging Face checkpoint directories: read theirs, write ours so transformers reads it back.

A directory holds config.json, model.safetensors (or shards), tokenizer.json + tokenizer_config.json (with the
chat template) and generation_config.json. Weight names and config keys go through `hf.py`.
"""

import json
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.model.config import ModelConfig
from lmforge.model.hf import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf
from lmforge.model.transformer import Transformer
from lmforge.model.weights import assign_state_dict, load_weights_dir, save_weights_file


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LmforgeError(f"{path} is not valid JSON: {err}") from None


def build_model(cfg: ModelConfig, hf_state: dict[str, torch.Tensor], source: str,
                dtype: torch.dtype = torch.float32) -> Transformer:
    """A Transformer holding the given HF-named weights (built on the meta device: no wasted random init)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    assign_state_dict(model, state_dict_from_hf(hf_state, cfg), source=source)
    model.tie_weights()
    return model.to(dtype).eval()


def load_hf_model(directory: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Transformer, dict]:
    """(model, generation_config dict) from a Hugging Face directory."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise LmforgeError(f"{directory} is not a Hugging Face model directory: config.json is missing")
    cfg = config_from_hf(read_json(config_path))
    model = build_model(cfg, load_weights_dir(directory), source=str(directory), dtype=dtype)
    gen_path = directory / "generation_config.json"
    generation_config = read_json(gen_path) if gen_path.is_file() else {}
    return model, generation_config


def save_hf_model(model: Transformer, directory: str | Path, generation_config: dict | None = None,
                  dtype: torch.dtype | None = None) -> None:
    """Write config.json, model.safetensors and generation_config.json (the tokenizer saves itself)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    dtype = dtype or model.embed.weight.dtype
    state = state_dict_to_hf({k: v.to(dtype) for k, v in model.state_dict().items()}, cfg)
    save_weights_file(state, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(config_to_hf(cfg, dtype), indent=2) + "\n")
    gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id}
    gen.update(generation_config or {})
    (directory / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
