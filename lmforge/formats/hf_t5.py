"""Hugging Face adapter for T5 (`T5ForConditionalGeneration`): config.json <-> T5Config, tensor names <-> lmforge's
T5Model (model/t5.py), and whole directories both ways.

transformers writes one `shared.weight` for both embeddings and the LM head, and `scale_decoder_outputs` (older
configs: tie_word_embeddings, which T5 v1.1 sets to false); an older checkpoint with its own `lm_head.weight` loads
untied.
"""

import json
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf_names import NameTable
from lmforge.formats.weights import assign_state_dict, load_weights_dir, save_weights_file
from lmforge.model.meta_init import on_meta
from lmforge.model.t5 import T5Model
from lmforge.model.t5_config import T5Config

_SIZES = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")


def _names(gated: bool) -> NameTable:
    pairs = [("shared.weight", "shared.weight"), ("lm_head.weight", "lm_head.weight"),
             ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "encoder_bias.embedding.weight"),
             ("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "decoder_bias.embedding.weight"),
             ("encoder.final_layer_norm.weight", "encoder_norm.weight"),
             ("decoder.final_layer_norm.weight", "decoder_norm.weight")]
    ffn = [("wi_0", "gate_proj"), ("wi_1", "up_proj")] if gated else [("wi", "up_proj")]
    for stack, ff_layer in (("encoder", 1), ("decoder", 2)):
        hf, ours = f"{stack}.block.{{i}}.layer.", f"{stack}.{{i}}."
        pairs += [(f"{hf}0.SelfAttention.{p}.weight", f"{ours}self_attn.{p}_proj.weight") for p in "qkvo"]
        pairs += [(f"{hf}0.layer_norm.weight", f"{ours}attn_norm.weight"),
                  (f"{hf}{ff_layer}.layer_norm.weight", f"{ours}mlp_norm.weight")]
        pairs += [(f"{hf}{ff_layer}.DenseReluDense.{a}.weight", f"{ours}mlp.{b}.weight")
                  for a, b in [*ffn, ("wo", "down_proj")]]
    pairs += [(f"decoder.block.{{i}}.layer.1.EncDecAttention.{p}.weight", f"decoder.{{i}}.cross_attn.{p}_proj.weight")
              for p in "qkvo"]
    pairs += [("decoder.block.{i}.layer.1.layer_norm.weight", "decoder.{i}.cross_norm.weight")]
    # the stacks' embed_tokens are the shared embedding (older checkpoints store them again)
    return NameTable(pairs, ignored=(r"encoder.embed_tokens.weight", r"decoder.embed_tokens.weight"))


def is_t5_config(hf: dict) -> bool:
    return isinstance(hf, dict) and hf.get("model_type") in ("t5", "mt5")


def t5_config_from_hf(hf: dict, untied_head: bool = False) -> T5Config:
    for key in _SIZES:
        value = hf.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise LmforgeError(f"config.json {key}={value!r} must be a positive integer (a T5 model needs it)")
    scale = hf.get("scale_decoder_outputs")
    if scale is None:  # configs written before transformers 5: tied embeddings meant scaled outputs
        scale = hf.get("tie_word_embeddings", True) is not False
    try:
        return T5Config(
            vocab_size=hf["vocab_size"], dim=hf["d_model"], head_dim=hf["d_kv"], n_heads=hf["num_heads"],
            ffn_dim=hf["d_ff"], n_layers=hf["num_layers"],
            n_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
            num_buckets=hf.get("relative_attention_num_buckets", 32),
            max_distance=hf.get("relative_attention_max_distance", 128),
            feed_forward=hf.get("feed_forward_proj", "relu"), norm_eps=hf.get("layer_norm_epsilon", 1e-6),
            scale_decoder_outputs=bool(scale), tie_embeddings=not untied_head,
            max_seq_len=hf.get("n_positions") or 512,
            pad_token_id=hf.get("pad_token_id", 0), eos_token_id=_single(hf.get("eos_token_id", 1)),
            decoder_start_token_id=hf.get("decoder_start_token_id", 0) or 0)
    except (TypeError, ValueError) as err:
        raise LmforgeError(f"config.json has a T5 value of the wrong type or range: {err}") from None


def _single(value):
    return value[0] if isinstance(value, list) and value else value


def t5_config_to_hf(cfg: T5Config, dtype: torch.dtype) -> dict:
    return {
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": cfg.vocab_size,
        "d_model": cfg.dim, "d_kv": cfg.head_dim, "d_ff": cfg.ffn_dim, "num_layers": cfg.n_layers,
        "num_decoder_layers": cfg.n_decoder_layers, "num_heads": cfg.n_heads,
        "relative_attention_num_buckets": cfg.num_buckets, "relative_attention_max_distance": cfg.max_distance,
        "feed_forward_proj": cfg.feed_forward, "layer_norm_epsilon": cfg.norm_eps,
        "scale_decoder_outputs": cfg.scale_decoder_outputs, "tie_word_embeddings": cfg.scale_decoder_outputs,
        "is_encoder_decoder": True, "dropout_rate": 0.0, "n_positions": cfg.max_seq_len,
        "pad_token_id": cfg.pad_token_id, "eos_token_id": cfg.eos_token_id,
        "decoder_start_token_id": cfg.decoder_start_token_id, "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
    }


def load_t5_dir(directory: Path, hf: dict, dtype: torch.dtype = torch.float32) -> T5Model:
    """A T5Model from a transformers T5 directory whose config.json dict is `hf`."""
    return t5_model_from_hf_state(load_weights_dir(directory), hf, dtype, source=str(directory))


def t5_model_from_hf_state(state: dict[str, torch.Tensor], hf: dict, dtype: torch.dtype = torch.float32,
                           source: str = "checkpoint") -> T5Model:
    """A T5Model from transformers-named tensors and a config.json dict (a directory's or a GGUF's)."""
    cfg = t5_config_from_hf(hf, untied_head="lm_head.weight" in state)
    ours = _names(cfg.gated).from_hf(state, "t5")
    if cfg.tie_embeddings and "shared.weight" in ours:
        ours["lm_head.weight"] = ours["shared.weight"]
    with on_meta():
        model = T5Model(cfg)
    assign_state_dict(model, ours, source=source)
    model.tie_weights()
    return model.to(dtype).eval()


def t5_hf_state(model: T5Model, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """transformers-named tensors of `model` (a tied head not repeated: it is shared.weight)."""
    tied = model.config.tie_embeddings
    state = {k: v.detach().to(dtype).cpu() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    return _names(model.config.gated).to_hf_state(state, "t5")


def save_t5_dir(model: T5Model, directory: str | Path, generation_config: dict | None = None,
                dtype: torch.dtype | None = None) -> None:
    """config.json, model.safetensors and generation_config.json that transformers' T5 classes read back."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    dtype = dtype or model.shared.weight.dtype
    save_weights_file(t5_hf_state(model, dtype), directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(t5_config_to_hf(cfg, dtype), indent=2) + "\n")
    gen = {"decoder_start_token_id": cfg.decoder_start_token_id, "eos_token_id": cfg.eos_token_id,
           "pad_token_id": cfg.pad_token_id, **(generation_config or {})}
    (directory / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
