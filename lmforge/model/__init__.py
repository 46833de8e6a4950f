"""The model layer: nn modules only (config and presets, attention, MLA, MoE, MTP, the Transformer); weight formats
live in lmforge.formats, quantization in lmforge.quant."""

from lmforge.model.config import ModelConfig
from lmforge.model.presets import family_config, get_preset, preset_names
from lmforge.model.resize import resize_token_embeddings
from lmforge.model.transformer import Transformer

__all__ = ["ModelConfig", "Transformer", "family_config", "get_preset", "preset_names",
           "resize_token_embeddings"]
