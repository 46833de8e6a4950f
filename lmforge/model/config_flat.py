"""The flat keyword view of ModelConfig: one key per switch, as configs were written before the sections existed.

`FLAT_KEYS` maps each flat key to (section, field). `from_flat` builds a ModelConfig from flat keys, section dicts
or section objects (old JSON configs, HF mappings, presets, keyword overrides); `to_flat` gives the flat view back.
A key of the other attention kind is accepted only at its default (old files carried every field).
"""

import dataclasses

from lmforge.common.errors import ConfigError
from lmforge.model.config_attention import ATTENTION_KINDS, ATTENTIONS
from lmforge.model.config_ffn import FFNConfig, MoEConfig
from lmforge.model.config_fields import section_from_dict
from lmforge.model.config_heads import EmbeddingConfig, HeadsConfig
from lmforge.model.config_norms import NormConfig
from lmforge.model.config_positions import PositionConfig

SECTION_TYPES: dict[str, type] = {"ffn": FFNConfig, "moe": MoEConfig, "positions": PositionConfig,
                                  "norms": NormConfig, "embeddings": EmbeddingConfig, "heads": HeadsConfig}
SECTIONS = ("attention", *SECTION_TYPES)

_SAME = {
    "attention": ("qkv_bias", "o_bias", "causal", "sliding_window", "layer_types", "query_pre_attn_scalar",
                  "n_kv_heads", "head_dim", "qk_norm", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                  "qk_rope_head_dim", "v_head_dim", "rope_interleave", "mla_mode"),
    "moe": ("n_routed_experts", "n_experts_per_tok", "n_shared_experts", "router", "norm_topk_prob",
            "routed_scaling_factor", "n_group", "topk_group", "router_score_bias", "first_k_dense_replace",
            "mlp_only_layers", "aux_loss_coef"),
    "positions": ("rope_theta", "rope_scaling", "rope_local_theta", "logn_train_len"),
    "embeddings": ("type_vocab_size",),
    "heads": ("final_logit_softcap", "n_mtp_modules", "mtp_loss_weight"),
}
FLAT_KEYS: dict[str, tuple[str, str]] = {
    **{key: (section, key) for section, keys in _SAME.items() for key in keys},
    "attention": ("attention", "kind"),
    "mlp": ("ffn", "kind"), "mlp_bias": ("ffn", "bias"),
    "moe_ffn_dim": ("moe", "ffn_dim"), "moe_layer_step": ("moe", "layer_step"),
    "norm": ("norms", "kind"), "norm_eps": ("norms", "eps"), "norm_position": ("norms", "position"),
    "pos_embedding": ("positions", "kind"),
    "embed_scale": ("embeddings", "scale"), "embed_norm": ("embeddings", "norm"),
    "mlm_head": ("heads", "mlm"),
}
_KIND_FIELDS = {kind: {f.name for f in dataclasses.fields(cls) if f.init} for kind, cls in ATTENTION_KINDS.items()}


def _attention(kind: str, fields: dict, n_heads: int):
    """The attention section of `kind` from flat fields; the other kind's fields must be at their defaults."""
    if kind not in ATTENTIONS:
        raise ConfigError(f"ModelConfig.attention must be one of {', '.join(ATTENTIONS)}, got {kind!r}")
    cls, own = ATTENTION_KINDS[kind], _KIND_FIELDS[kind]
    section = cls(**{k: v for k, v in fields.items() if k in own})  # its own fields' errors first
    other = next(c for k, c in ATTENTION_KINDS.items() if k != kind)
    defaults = {f.name: f.default for f in dataclasses.fields(other)}
    for name, value in fields.items():
        if name in own:
            continue
        if name not in defaults:
            raise ConfigError(f"unknown ModelConfig.attention field {name!r}; allowed for {kind}: "
                              f"{', '.join(sorted(own))}")
        harmless = value == defaults[name] or (kind == "mla" and (
            (name == "head_dim" and value == section.qk_rope_head_dim)
            or (name == "n_kv_heads" and value == n_heads)))  # MLA's HF config.json states both
        if not harmless:
            raise ConfigError(f"ModelConfig field {name}={value!r} applies to attention={other().kind!r}, "
                              f"not {kind!r}")
    return section


def from_flat(cls, kw: dict):
    """A ModelConfig from top-level fields, flat keys (FLAT_KEYS), section dicts or section objects."""
    top = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in kw if k not in top and k not in FLAT_KEYS)
    if unknown:
        raise ConfigError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
    args, flat = {}, {name: {} for name in SECTIONS}
    for key, value in kw.items():
        if key in SECTIONS and (isinstance(value, dict) or dataclasses.is_dataclass(value)):
            args[key] = value  # a whole section
        elif key in FLAT_KEYS:
            section, name = FLAT_KEYS[key]
            flat[section][name] = value
        else:
            args[key] = value
    for section, fields in flat.items():
        base = args.get(section)
        if base is not None and not isinstance(base, dict) and not dataclasses.is_dataclass(base):
            continue  # not a section at all: ModelConfig's type check names it
        if dataclasses.is_dataclass(base):
            if not fields:
                continue  # a section object as given
            base = {**to_dict(base), "kind": base.kind} if section == "attention" else to_dict(base)
        merged = {**(base or {}), **fields}
        try:
            if section == "attention":
                if merged or base is not None:
                    kind = merged.pop("kind", "gqa")
                    args[section] = _attention(kind, merged, kw.get("n_heads", cls.n_heads))
            elif base is not None or fields:
                args[section] = section_from_dict(SECTION_TYPES[section], merged, f"ModelConfig.{section}")
        except ConfigError as err:
            raise ConfigError(_with_flat_key(str(err), section, kw)) from None
    return cls(**args)


def _with_flat_key(message: str, section: str, given: dict) -> str:
    """Name the flat key the user wrote when the section's message names the field under its new name."""
    keys = [k for k, (sec, name) in FLAT_KEYS.items() if sec == section and k in given and k != name
            and (f"ModelConfig.{section}.{name} " in message or f"{name}=" in message)]
    return f"{message} (given as {keys[0]})" if keys else message


def to_dict(section) -> dict:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if f.init}


def to_flat(cfg) -> dict:
    """The flat view: top-level fields plus every section field under its flat key (attention: the kind's own)."""
    out = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in SECTIONS}
    for key, (section, name) in FLAT_KEYS.items():
        value = getattr(cfg, section)
        if hasattr(value, name):
            out[key] = getattr(value, name)
    return out

