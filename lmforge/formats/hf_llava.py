"""Hugging Face LLaVA directories (`LlavaForConditionalGeneration`): a CLIP/SigLIP tower, the projector, an LM.

The language model's config and weights go through hf.py (Llama, Qwen2, ... as for a text checkpoint); the tower's
through hf_vision.py. Written in the layout transformers saves (language_model.model.*, language_model.lm_head.*).
"""

from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf
from lmforge.formats.hf_vision import _config, _write, build, vit_config_from_hf, vit_config_to_hf
from lmforge.formats.weights import load_weights_dir
from lmforge.model.vision.projector import LlavaConfig, LlavaModel

_VISION_KINDS = {"clip_vision_model": "clip", "siglip_vision_model": "siglip"}
# Prefixes transformers has used for the three parts (4.x "model.*" layout and the saved legacy layout).
_PREFIXES = [("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
             ("model.vision_tower.", "vision_tower."), ("model.multi_modal_projector.", "multi_modal_projector."),
             ("vision_tower.vision_model.", "vision_tower.")]


def llava_config_from_hf(hf: dict) -> LlavaConfig:
    if hf.get("model_type") != "llava":
        raise LmforgeError(f"expected a LLaVA config.json (model_type 'llava'), "
                           f"got model_type {hf.get('model_type')!r}")
    vision = hf.get("vision_config") or {}
    kind = _VISION_KINDS.get(vision.get("model_type", "clip_vision_model"))
    if kind is None:
        raise LmforgeError(f"unsupported LLaVA vision tower {vision.get('model_type')!r}; supported: "
                           f"{', '.join(_VISION_KINDS)}")
    layer = hf.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise LmforgeError(f"vision_feature_layer={layer!r}: only a single layer is supported")
    text = dict(hf.get("text_config") or {})
    text.setdefault("model_type", "llama")
    return LlavaConfig(vision=vit_config_from_hf(vision, kind), text=config_from_hf(text),
                       image_token_id=hf.get("image_token_id", hf.get("image_token_index", 32000)),
                       feature_layer=layer, feature_select=hf.get("vision_feature_select_strategy", "default"),
                       projector_act=hf.get("projector_hidden_act", "gelu"),
                       projector_bias=bool(hf.get("multimodal_projector_bias", True)))


def llava_config_to_hf(cfg: LlavaConfig) -> dict:
    return {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
            "vision_config": vit_config_to_hf(cfg.vision), "text_config": config_to_hf(cfg.text),
            "image_token_id": cfg.image_token_id, "image_seq_length": cfg.tokens_per_image,
            "vision_feature_layer": cfg.feature_layer, "vision_feature_select_strategy": cfg.feature_select,
            "projector_hidden_act": cfg.projector_act, "multimodal_projector_bias": cfg.projector_bias,
            "tie_word_embeddings": cfg.text.tie_embeddings}


def _canonical(name: str) -> str:
    for old, new in _PREFIXES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def load_llava(directory: str | Path) -> LlavaModel:
    """A LlavaModel (lmforge Transformer as its LM) from a transformers LLaVA directory."""
    directory = Path(directory)
    cfg = llava_config_from_hf(_config(directory))
    hf_state = {_canonical(k): v for k, v in load_weights_dir(directory).items()}
    lm = {k.removeprefix("language_model."): v for k, v in hf_state.items() if k.startswith("language_model.")}
    state = {k: v for k, v in hf_state.items() if not k.startswith("language_model.")}
    state.update({f"language_model.{k}": v for k, v in state_dict_from_hf(lm, cfg.text).items()})
    model = build(LlavaModel, cfg, state, str(directory))
    model.language_model.tie_weights()
    return model


def save_llava(model: LlavaModel, directory: str | Path, dtype: torch.dtype | None = None) -> None:
    """config.json + model.safetensors that LlavaForConditionalGeneration.from_pretrained reads back."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("language_model.")}
    lm = state_dict_to_hf(model.language_model.state_dict(), model.config.text)
    state.update({f"language_model.{k}": v for k, v in lm.items()})
    _write(Path(directory), state, llava_config_to_hf(model.config), dtype)
