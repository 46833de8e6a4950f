"""Hugging Face checkpoint directories: read theirs, write ours so transformers reads it back.

A directory holds config.json, model.safetensors (or shards), tokenizer.json + tokenizer_config.json (with the
chat template) and generation_config.json. Weight names and config keys go through `hf.py`.
"""

import json
import re
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf
from lmforge.formats.weights import assign_state_dict, load_weights_dir, save_weights_file
from lmforge.model.config import ModelConfig
from lmforge.model.meta_init import on_meta
from lmforge.model.transformer import Transformer

# model.layers.N. (decoders), encoder.layer.N. (BERT), transformer.h.N. (BLOOM)
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers?|h)\.(\d+)\.")
_EMBEDDINGS = ("model.embed_tokens.weight", "bert.embeddings.word_embeddings.weight",
               "transformer.word_embeddings.weight")


def read_json(path: Path) -> dict:
    """A JSON object from `path`; anything else (invalid JSON, a list, a number) is a one-line LmforgeError."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LmforgeError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise LmforgeError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def check_config_against_weights(cfg: ModelConfig, shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Refuse a config whose sizes the weights contradict, before a model of that size is built: the layer count
    against the layer indices present, vocab_size and hidden_size against the embedding table's shape."""
    layers = {int(m[1]) for name in shapes if (m := _LAYER_INDEX.search(name))}
    # More in the file is allowed (DeepSeek stores its MTP modules as layers); fewer is a wrong config.
    if cfg.n_layers > len(layers) or any(i not in layers for i in range(cfg.n_layers)):
        held = f"layers 0..{max(layers)}" if layers else "no layers"
        raise LmforgeError(f"config num_hidden_layers={cfg.n_layers} but {source} holds {held} "
                           f"({len(layers)} layer(s)); fix num_hidden_layers in config.json")
    for name in _EMBEDDINGS:
        if name in shapes and tuple(shapes[name]) != (cfg.vocab_size, cfg.dim):
            vocab, dim = (tuple(shapes[name]) + (None, None))[:2]
            field = "vocab_size" if vocab != cfg.vocab_size else "hidden_size"
            value = cfg.vocab_size if field == "vocab_size" else cfg.dim
            raise LmforgeError(f"config {field}={value} but {source} has {name} of shape {list(shapes[name])} "
                               f"(vocab_size={vocab}, hidden_size={dim})")


def build_model(cfg: ModelConfig, hf_state: dict[str, torch.Tensor], source: str,
                dtype: torch.dtype = torch.float32) -> Transformer:
    """A Transformer holding the given HF-named weights (built on the meta device: no wasted random init)."""
    with on_meta():
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
    state = load_weights_dir(directory)  # bounded by the files' size; the model's size is checked against it
    check_config_against_weights(cfg, {k: tuple(v.shape) for k, v in state.items()}, str(directory))
    model = build_model(cfg, state, source=str(directory), dtype=dtype)
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
