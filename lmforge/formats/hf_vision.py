"""Hugging Face directories of vision modules: CLIP (`CLIPModel`), SigLIP (`SiglipVisionModel`) and the BLIP-2
Q-Former (`Blip2QFormerModel`), read and written.

lmforge's vision modules keep transformers' module names, so weights map by prefix only; config.json keys are
translated here (hidden_size -> dim ...). The image processor travels as preprocessor_config.json (data/images.py).
"""

import json
from pathlib import Path

import torch
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf_dir import read_json
from lmforge.formats.weights import assign_state_dict, load_weights_dir, save_weights_file
from lmforge.model.meta_init import on_meta
from lmforge.model.vision.clip import CLIPConfig, CLIPModel, TextTowerConfig
from lmforge.model.vision.qformer import QFormer, QFormerConfig
from lmforge.model.vision.vit import VisionTransformer, ViTConfig

_ACTS = {"clip": "quick_gelu", "siglip": "gelu_pytorch_tanh"}
_EPS = {"clip": 1e-5, "siglip": 1e-6}


def _int(hf: dict, key: str, default=None) -> int:
    value = hf.get(key, default)
    if value is None:
        raise LmforgeError(f"config.json lacks {key!r}, which a vision tower needs")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise LmforgeError(f"config.json {key}={value!r} must be a positive integer")
    return value


def vit_config_from_hf(hf: dict, kind: str) -> ViTConfig:
    """ViTConfig from a CLIPVisionConfig / SiglipVisionConfig dict."""
    return ViTConfig(kind=kind, image_size=_int(hf, "image_size", 224), patch_size=_int(hf, "patch_size", 32),
                     channels=_int(hf, "num_channels", 3), dim=_int(hf, "hidden_size", 768),
                     n_layers=_int(hf, "num_hidden_layers", 12), n_heads=_int(hf, "num_attention_heads", 12),
                     ffn_dim=_int(hf, "intermediate_size", 3072), act=hf.get("hidden_act", _ACTS[kind]),
                     eps=float(hf.get("layer_norm_eps", _EPS[kind])), use_head=bool(hf.get("vision_use_head", True)))


def vit_config_to_hf(cfg: ViTConfig) -> dict:
    hf = {"model_type": f"{cfg.kind}_vision_model", "hidden_size": cfg.dim, "intermediate_size": cfg.ffn_dim,
          "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads, "num_channels": cfg.channels,
          "image_size": cfg.image_size, "patch_size": cfg.patch_size, "hidden_act": cfg.act,
          "layer_norm_eps": cfg.eps, "attention_dropout": 0.0}
    if cfg.kind == "siglip":
        hf["vision_use_head"] = cfg.use_head
    return hf


def text_config_from_hf(hf: dict) -> TextTowerConfig:
    eos = hf.get("eos_token_id", 49407)
    return TextTowerConfig(vocab_size=_int(hf, "vocab_size", 49408),
                           max_positions=_int(hf, "max_position_embeddings", 77),
                           dim=_int(hf, "hidden_size", 512), n_layers=_int(hf, "num_hidden_layers", 12),
                           n_heads=_int(hf, "num_attention_heads", 8), ffn_dim=_int(hf, "intermediate_size", 2048),
                           act=hf.get("hidden_act", "quick_gelu"), eps=float(hf.get("layer_norm_eps", 1e-5)),
                           eos_token_id=eos[0] if isinstance(eos, list) else eos)


def clip_config_from_hf(hf: dict) -> CLIPConfig:
    if hf.get("model_type") != "clip":
        raise LmforgeError(f"expected a CLIP config.json (model_type 'clip'), got model_type {hf.get('model_type')!r}")
    return CLIPConfig(text=text_config_from_hf(hf.get("text_config") or {}),
                      vision=vit_config_from_hf(hf.get("vision_config") or {}, "clip"),
                      projection_dim=_int(hf, "projection_dim", 512),
                      logit_scale_init=float(hf.get("logit_scale_init_value", 2.6592)),
                      loss=hf.get("lmforge_contrastive_loss", "infonce"))


def clip_config_to_hf(cfg: CLIPConfig) -> dict:
    t = cfg.text
    text = {"model_type": "clip_text_model", "vocab_size": t.vocab_size, "hidden_size": t.dim,
            "intermediate_size": t.ffn_dim, "num_hidden_layers": t.n_layers, "num_attention_heads": t.n_heads,
            "max_position_embeddings": t.max_positions, "hidden_act": t.act, "layer_norm_eps": t.eps,
            "eos_token_id": t.eos_token_id, "projection_dim": cfg.projection_dim}
    return {"architectures": ["CLIPModel"], "model_type": "clip", "text_config": text,
            "vision_config": {**vit_config_to_hf(cfg.vision), "projection_dim": cfg.projection_dim},
            "projection_dim": cfg.projection_dim, "logit_scale_init_value": cfg.logit_scale_init,
            # a sigmoid-loss (SigLIP-style) model also stores logit_bias, which CLIPModel ignores; we read it back
            "lmforge_contrastive_loss": cfg.loss}


def build(module_cls, cfg, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """A module of `module_cls(cfg)` built on the meta device and filled strictly from `state`."""
    with on_meta():
        model = module_cls(cfg)
    assign_state_dict(model, state, source=source)
    return model.float().eval()


def _config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise LmforgeError(f"{directory} is not a Hugging Face model directory: config.json is missing")
    return read_json(path)


def _write(directory: Path, state: dict[str, torch.Tensor], config: dict, dtype: torch.dtype | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype else v).contiguous() for k, v in state.items()}
    save_weights_file(state, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_clip(directory: str | Path) -> CLIPModel:
    """A CLIPModel from a transformers CLIPModel directory."""
    directory = Path(directory)
    cfg = clip_config_from_hf(_config(directory))
    return build(CLIPModel, cfg, load_weights_dir(directory), str(directory))


def save_clip(model: CLIPModel, directory: str | Path, dtype: torch.dtype | None = None) -> None:
    _write(Path(directory), model.state_dict(), clip_config_to_hf(model.config), dtype)


def load_siglip_vision(directory: str | Path) -> VisionTransformer:
    """A SigLIP vision tower from a SiglipVisionModel directory (or a SiglipModel's vision half)."""
    directory = Path(directory)
    hf = _config(directory)
    if hf.get("model_type") == "siglip":
        hf = hf.get("vision_config") or {}
    elif hf.get("model_type") != "siglip_vision_model":
        raise LmforgeError(f"expected a SigLIP config.json (model_type 'siglip_vision_model' or 'siglip'), "
                           f"got model_type {hf.get('model_type')!r}")
    state = {k.removeprefix("vision_model."): v for k, v in load_weights_dir(directory).items()
             if not k.startswith("text_model.") and k not in ("logit_scale", "logit_bias")}
    return build(VisionTransformer, vit_config_from_hf(hf, "siglip"), state, str(directory))


def save_siglip_vision(model: VisionTransformer, directory: str | Path, dtype: torch.dtype | None = None) -> None:
    if model.config.kind != "siglip":
        raise LmforgeError(f"save_siglip_vision needs a SigLIP tower, got kind {model.config.kind!r}")
    config = {"architectures": ["SiglipVisionModel"], **vit_config_to_hf(model.config)}
    _write(Path(directory), model.state_dict(), config, dtype)


def qformer_config_from_hf(hf: dict, n_queries: int = 0) -> QFormerConfig:
    if hf.get("use_qformer_text_input"):
        raise LmforgeError("a Q-Former with text input (use_qformer_text_input) is not supported: queries only")
    return QFormerConfig(dim=_int(hf, "hidden_size", 768), n_layers=_int(hf, "num_hidden_layers", 12),
                         n_heads=_int(hf, "num_attention_heads", 12), ffn_dim=_int(hf, "intermediate_size", 3072),
                         encoder_dim=_int(hf, "encoder_hidden_size", 1408),
                         cross_attention_every=_int(hf, "cross_attention_frequency", 2),
                         act=hf.get("hidden_act", "gelu"), eps=float(hf.get("layer_norm_eps", 1e-12)),
                         n_queries=n_queries)


def qformer_config_to_hf(cfg: QFormerConfig) -> dict:
    return {"architectures": ["Blip2QFormerModel"], "model_type": "blip_2_qformer", "hidden_size": cfg.dim,
            "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads, "intermediate_size": cfg.ffn_dim,
            "encoder_hidden_size": cfg.encoder_dim, "cross_attention_frequency": cfg.cross_attention_every,
            "hidden_act": cfg.act, "layer_norm_eps": cfg.eps, "use_qformer_text_input": False}


def load_qformer(directory: str | Path) -> QFormer:
    """A Q-Former from a Blip2QFormerModel directory, or the Q-Former (with its query_tokens) of a BLIP-2 one."""
    directory = Path(directory)
    hf = _config(directory)
    state = load_weights_dir(directory)
    if hf.get("model_type") == "blip-2":
        queries = state.get("query_tokens")
        state = {k.removeprefix("qformer."): v for k, v in state.items() if k.startswith("qformer.")}
        if queries is not None:
            state["query_tokens"] = queries
        cfg = qformer_config_from_hf(hf.get("qformer_config") or {}, 0 if queries is None else queries.shape[1])
    elif hf.get("model_type") == "blip_2_qformer":
        cfg = qformer_config_from_hf(hf)
    else:
        raise LmforgeError(f"expected a BLIP-2 Q-Former config.json (model_type 'blip_2_qformer' or 'blip-2'), "
                           f"got model_type {hf.get('model_type')!r}")
    return build(QFormer, cfg, state, str(directory))


def save_qformer(model: QFormer, directory: str | Path, dtype: torch.dtype | None = None) -> None:
    """A Blip2QFormerModel directory (the learned queries, which that class does not own, are left out)."""
    state = {k: v for k, v in model.state_dict().items() if k != "query_tokens"}
    _write(Path(directory), state, qformer_config_to_hf(model.config), dtype)
