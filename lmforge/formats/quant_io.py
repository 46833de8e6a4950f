"""Quantized model directories: config.json + quantization_config.json + model.safetensors (lmforge tensor names).

The int8 / int4 tensors are stored in portable layouts (see quant.py), so a directory written on one CPU loads on
another; `lmforge.load(DIR)` notices quantization_config.json and rebuilds the modules its method left (Int8Linear /
Int4Linear; AWQ's ScaledInputLinear, SmoothQuant's W8A8Linear: quant/calibrated.py).
"""

import json
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf import config_from_hf, config_to_hf
from lmforge.formats.hf_dir import read_json
from lmforge.formats.weights import load_weights_file, save_weights_file
from lmforge.model.meta_init import on_meta
from lmforge.model.transformer import Transformer
from lmforge.quant.calibrated import empty_linear
from lmforge.quant.int_linear import QuantConfig, quantizable_linears, set_submodule

QUANT_CONFIG_FILE = "quantization_config.json"
FP32_NAMES = (".input_scale", ".weight_scales")


def is_quantized_dir(path: Path) -> bool:
    return path.is_dir() and (path / QUANT_CONFIG_FILE).is_file()


def lm_head_is_tied(model: Transformer) -> bool:
    return model.lm_head.weight is model.embed.weight


def save_quantized(model: Transformer, directory: str | Path, generation_config: dict | None = None) -> None:
    """Write a quantized model (from `quantize_model`); the tokenizer saves itself next to it."""
    cfg: QuantConfig | None = getattr(model, "quant_config", None)
    if cfg is None:
        raise LmforgeError("the model is not quantized: call quantize_model(model, bits=...) first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if lm_head_is_tied(model):
        state.pop("lm_head.weight")  # tied and left in float: the loader re-ties it
    save_weights_file(state, directory / "model.safetensors")
    float_dtype = model.embed.weight.dtype
    (directory / "config.json").write_text(json.dumps(config_to_hf(model.config, float_dtype), indent=2) + "\n")
    (directory / QUANT_CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    gen = {"bos_token_id": model.config.bos_token_id, "eos_token_id": model.config.eos_token_id,
           "pad_token_id": model.config.pad_token_id}
    gen.update(generation_config or {})
    (directory / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def load_quantized(directory: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Transformer, dict]:
    """(quantized model, generation_config dict) from a directory written by save_quantized.

    `dtype` applies to the float tensors (embedding, norms, skipped layers); quantized layers keep their codes.
    """
    directory = Path(directory)
    for name in (QUANT_CONFIG_FILE, "config.json"):
        if not (directory / name).is_file():
            raise LmforgeError(f"{directory} is not a valid quantized model directory: {name} is missing")
    quant = QuantConfig.from_dict(read_json(directory / QUANT_CONFIG_FILE))
    cfg = config_from_hf(read_json(directory / "config.json"))
    with on_meta():
        model = Transformer(cfg)
    head_quantized = any(name == "lm_head" for name, _ in quantizable_linears(model, quant.skip))
    for name, linear in quantizable_linears(model, quant.skip):
        set_submodule(model, name, empty_linear(linear, quant, name))
    state = load_weights_file(directory / "model.safetensors")
    tied = cfg.tie_embeddings and not head_quantized
    if tied:
        state["lm_head.weight"] = state["embed.weight"]
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise LmforgeError(f"{directory}/model.safetensors does not match its quantization config: "
                           f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for name, tensor in state.items():
        if tensor.is_floating_point() and expected[name].dtype != torch.bfloat16 and not name.endswith(FP32_NAMES):
            tensor = tensor.to(dtype)  # kernel scales stay bf16, AWQ / SmoothQuant scales float32
        # Tensors read from a safetensors file can start at any byte; the int8 kernel uses aligned vector loads
        # and crashes on such memory, so every tensor gets its own (64-byte aligned) allocation.
        state[name] = tensor.clone()
    model.load_state_dict(state, strict=True, assign=True)
    if tied:
        model.tie_weights()
    model.quant_config = quant
    gen_path = directory / "generation_config.json"
    generation = read_json(gen_path) if gen_path.is_file() else {}
    return model.eval(), generation
