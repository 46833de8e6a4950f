"""LoRA adapters in the Hugging Face `peft` directory format: adapter_config.json + adapter_model.safetensors.

Tensor names are peft's: `base_model.model.<transformers module>.lora_A.weight` ([r, in]) and `.lora_B.weight`
([out, r]); module names go through lmforge.formats.hf, so `peft.PeftModel.from_pretrained` applies our adapter to
the transformers model, and adapters made by `peft` load into ours.
"""

import json
import re
from pathlib import Path

import torch
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf import state_dict_from_hf, state_dict_to_hf
from lmforge.formats.weights import load_weights_file, save_weights_file
from lmforge.peft.lora import LoraConfig, apply_lora, find_targets, lora_layers

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
# base_model.model.<module>.lora_A[.<adapter name>].weight
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def hf_module_name(name: str, cfg) -> str:
    """lmforge module name -> transformers one (e.g. layers.0.attn.q_proj -> model.layers.0.self_attn.q_proj)."""
    if name == "lm_head":
        return name
    (hf_name,) = state_dict_to_hf({f"{name}.weight": torch.empty(0)}, cfg)
    return hf_name.removesuffix(".weight")


def lmforge_module_name(hf_name: str, cfg) -> str:
    if hf_name == "lm_head":
        return hf_name
    state = state_dict_from_hf({f"{hf_name}.weight": torch.empty(0)}, cfg)
    if len(state) != 1:
        raise LmforgeError(f"adapter module {hf_name!r} has no lmforge equivalent in a {cfg.family} model")
    return next(iter(state)).removesuffix(".weight")


def _peft_target_modules(model: nn.Module, names: list[str]) -> list[str]:
    """Leaf names (e.g. q_proj) when they select exactly the adapted layers in peft's suffix matching, else full
    module names."""
    cfg = model.config
    hf_names = [hf_module_name(n, cfg) for n in names]
    leaves = sorted({n.rsplit(".", 1)[-1] for n in hf_names})
    if find_targets(model, tuple(n.rsplit(".", 1)[-1] for n in names)) == names:
        return leaves
    return sorted(hf_names)


def save_adapter(model: nn.Module, cfg: LoraConfig, out_dir: str | Path, base_model_name: str = "") -> Path:
    """Write the model's LoRA layers as a peft adapter directory; returns the directory."""
    layers = lora_layers(model)
    if not layers:
        raise LmforgeError("the model has no LoRA layers to save (apply_lora first)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [name for name, _ in layers]
    state = {}
    for name, layer in layers:
        hf_name = hf_module_name(name, model.config)
        state[f"{PREFIX}{hf_name}.lora_A.weight"] = layer.lora_A
        state[f"{PREFIX}{hf_name}.lora_B.weight"] = layer.lora_B
    save_weights_file(state, out_dir / WEIGHTS_FILE)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name,
        "r": cfg.r, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout,
        "target_modules": _peft_target_modules(model, names), "bias": "none", "use_rslora": cfg.use_rslora,
        "use_dora": False, "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def read_adapter_config(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir) / CONFIG_FILE
    if not path.is_file():
        raise LmforgeError(f"{adapter_dir} is not a PEFT adapter directory: {CONFIG_FILE} is missing")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LmforgeError(f"{path} is not valid JSON: {err}") from None
    if config.get("peft_type") != "LORA":
        raise LmforgeError(f"{path}: peft_type {config.get('peft_type')!r} is not supported; only LORA adapters load")
    unsupported = {"bias": config.get("bias", "none") != "none", "use_dora": bool(config.get("use_dora")),
                   "rank_pattern": bool(config.get("rank_pattern")), "alpha_pattern": bool(config.get("alpha_pattern")),
                   "modules_to_save": bool(config.get("modules_to_save")),
                   "fan_in_fan_out": bool(config.get("fan_in_fan_out"))}
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise LmforgeError(f"{path}: {', '.join(bad)} not supported (lmforge loads plain LoRA adapters: bias 'none', "
                           "no DoRA, one rank and alpha for every layer)")
    return config


def load_adapter(model: nn.Module, adapter_dir: str | Path) -> LoraConfig:
    """Apply the LoRA adapter stored in `adapter_dir` (ours or one made by `peft`) to a model without LoRA layers."""
    config = read_adapter_config(adapter_dir)
    tensors = load_weights_file(Path(adapter_dir) / WEIGHTS_FILE)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise LmforgeError(f"{adapter_dir}: unexpected tensor {key!r} (expected "
                               f"{PREFIX}<module>.lora_A.weight / .lora_B.weight)")
        module = lmforge_module_name(match["module"], model.config)
        pairs.setdefault(module, {})[match["ab"]] = tensor
    incomplete = [m for m, ab in pairs.items() if set(ab) != {"A", "B"}]
    if not pairs or incomplete:
        raise LmforgeError(f"{adapter_dir}: no complete lora_A/lora_B pair for {incomplete or 'any module'}")
    cfg = LoraConfig(r=int(config["r"]), alpha=float(config.get("lora_alpha", config["r"])),
                     dropout=float(config.get("lora_dropout", 0.0)), target_modules=tuple(pairs),
                     use_rslora=bool(config.get("use_rslora", False)))
    apply_lora(model, cfg)
    layers = dict(lora_layers(model))
    with torch.no_grad():
        for module, ab in pairs.items():
            layer = layers[module]
            for which, param in (("A", layer.lora_A), ("B", layer.lora_B)):
                if ab[which].shape != param.shape:
                    raise LmforgeError(f"{adapter_dir}: lora_{which} of {module} has shape {tuple(ab[which].shape)}, "
                                       f"the model expects {tuple(param.shape)} (an adapter for another base?)")
                param.copy_(ab[which])
    return cfg
