"""RoPE scaling for long context: position interpolation, NTK-aware, dynamic NTK, YaRN and Llama-3 frequencies.

Each scheme rewrites the rotation speeds (inv_freq) and may add an attention temperature that multiplies cos/sin.
References: Chen et al. 2023 (position interpolation), bloc97 2023 (NTK-aware), Peng et al. 2023 ("YaRN"),
Meta 2024 (Llama 3.1). The formulas follow transformers' `ROPE_INIT_FUNCTIONS`, tested equal.
"""

import math

import torch

from lmforge.common.errors import ConfigError
from lmforge.model.rope import rope_inv_freq

# rope_type -> (required keys, optional keys) of the HF-style rope_scaling dict.
ROPE_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "default": ((), ()),
    "linear": (("factor",), ()),
    "ntk": (("factor",), ()),  # static NTK-aware: base * factor^(d/(d-2)); no transformers equivalent
    "dynamic": (("factor",), ()),
    "yarn": (("factor",), ("original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
                           "mscale", "mscale_all_dim", "truncate")),
    "llama3": (("factor", "low_freq_factor", "high_freq_factor"), ("original_max_position_embeddings",)),
    "freq_factors": (("factors",), ()),  # llama.cpp's per-channel divisors (GGUF rope_freqs tensor)
}


def validate_rope_scaling(scaling: dict | None, head_dim: int) -> None:
    """Raise ConfigError naming the bad key of a rope_scaling dict (None means plain RoPE)."""
    if scaling is None:
        return
    if not isinstance(scaling, dict):
        raise ConfigError(f"ModelConfig.positions.rope_scaling must be a dict or None, got {scaling!r}")
    rope_type = scaling.get("rope_type")
    if rope_type not in ROPE_TYPES:
        raise ConfigError(f"ModelConfig.positions.rope_scaling['rope_type'] must be one of {', '.join(ROPE_TYPES)}, "
                          f"got {rope_type!r}")
    required, optional = ROPE_TYPES[rope_type]
    missing = [k for k in required if scaling.get(k) is None]
    unknown = sorted(set(scaling) - set(required) - set(optional) - {"rope_type"})
    if missing or unknown:
        raise ConfigError(f"ModelConfig.positions.rope_scaling for {rope_type!r} needs {list(required)} and may have "
                          f"{list(optional)}; missing {missing}, unknown {unknown}")
    for key, value in scaling.items():
        _check_value(key, value)
    if rope_type == "freq_factors" and len(scaling["factors"]) != head_dim // 2:
        raise ConfigError(f"ModelConfig.positions.rope_scaling['factors'] must hold head_dim/2 = {head_dim // 2} "
                          f"positive numbers, got {len(scaling['factors'])}")
    if rope_type == "llama3" and not scaling["high_freq_factor"] > scaling["low_freq_factor"]:
        raise ConfigError("ModelConfig.positions.rope_scaling needs high_freq_factor > low_freq_factor > 0 for llama3")


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_POSITIVE = ("a positive number", lambda v: _is_number(v) and v > 0)
# The range of each value a rope_scaling dict may hold: (what is allowed, test).
_VALUE_RANGES = {
    **dict.fromkeys(("factor", "attention_factor", "beta_fast", "beta_slow", "low_freq_factor", "high_freq_factor"),
                    _POSITIVE),
    **dict.fromkeys(("mscale", "mscale_all_dim"), ("a number >= 0", lambda v: _is_number(v) and v >= 0)),
    "original_max_position_embeddings": ("a positive integer",
                                         lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
    "truncate": ("true or false", lambda v: isinstance(v, bool)),
    "factors": ("a list of positive numbers",
                lambda v: isinstance(v, list | tuple) and len(v) > 0 and all(_POSITIVE[1](x) for x in v)),
}


def _check_value(key: str, value) -> None:
    if key not in _VALUE_RANGES or value is None:  # rope_type; optional keys may be null
        return
    allowed, test = _VALUE_RANGES[key]
    if not test(value):
        shown = f"{len(value)} values" if isinstance(value, list | tuple) and len(value) > 8 else repr(value)
        raise ConfigError(f"ModelConfig.positions.rope_scaling[{key!r}] must be {allowed}, got {shown}")


def scaled_inv_freq(head_dim: int, theta: float, scaling: dict | None, max_seq_len: int,
                    seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim/2] in float32, attention factor multiplying cos and sin).

    max_seq_len: the model's context (transformers' max_position_embeddings); seq_len: the current length,
    only used by dynamic NTK (frequencies then change with the length seen, as in transformers).
    """
    rope_type = (scaling or {}).get("rope_type", "default")
    if rope_type == "default":
        return rope_inv_freq(head_dim, theta), 1.0
    if rope_type == "linear":
        return rope_inv_freq(head_dim, theta) / scaling["factor"], 1.0
    if rope_type == "ntk":
        return rope_inv_freq(head_dim, ntk_base(theta, scaling["factor"], head_dim)), 1.0
    if rope_type == "dynamic":
        return dynamic_ntk_inv_freq(head_dim, theta, scaling["factor"], max_seq_len, seq_len), 1.0
    if rope_type == "yarn":
        return yarn_inv_freq(head_dim, theta, scaling, max_seq_len)
    if rope_type == "llama3":
        original = scaling.get("original_max_position_embeddings") or max_seq_len
        return llama3_inv_freq(head_dim, theta, scaling["factor"], scaling["low_freq_factor"],
                               scaling["high_freq_factor"], original), 1.0
    if rope_type == "freq_factors":
        return rope_inv_freq(head_dim, theta) / torch.tensor(scaling["factors"], dtype=torch.float32), 1.0
    raise ConfigError(f"unknown rope_type {rope_type!r}")


def ntk_base(theta: float, alpha: float, head_dim: int) -> float:
    """NTK-aware base change: stretch low frequencies by ~alpha while high frequencies barely move."""
    return theta * alpha ** (head_dim / (head_dim - 2))


def dynamic_ntk_inv_freq(head_dim: int, theta: float, factor: float, max_seq_len: int,
                         seq_len: int | None) -> torch.Tensor:
    """Dynamic NTK: no change up to max_seq_len, then alpha = factor * seq_len / max_seq_len - (factor - 1)."""
    seq_len = max(seq_len or max_seq_len, max_seq_len)
    return rope_inv_freq(head_dim, ntk_base(theta, factor * seq_len / max_seq_len - (factor - 1), head_dim))


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature: 0.1 * mscale * ln(scale) + 1 (1 for scale <= 1)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq(head_dim: int, theta: float, scaling: dict, max_seq_len: int) -> tuple[torch.Tensor, float]:
    """YaRN ("NTK-by-parts"): interpolate slow channels by `factor`, keep fast ones, ramp linearly between."""
    factor = scaling["factor"]
    original = scaling.get("original_max_position_embeddings") or max_seq_len
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all_dim:  # DeepSeek's variant
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_mscale(factor)
    beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:  # the channel that turns `rotations` times over `original`
        return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    extrapolation = 1 - ramp  # 1: keep the channel's frequency; 0: interpolate it by `factor`
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention_factor)


def llama3_inv_freq(head_dim: int, theta: float, factor: float, low_freq_factor: float, high_freq_factor: float,
                    original: int) -> torch.Tensor:
    """Llama 3.1: wavelengths beyond original/low_freq_factor are divided by factor, below original/high_freq_factor
    kept, and smoothly blended in between."""
    inv_freq = rope_inv_freq(head_dim, theta)
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen, high_freq_wavelen = original / low_freq_factor, original / high_freq_factor
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def llama3_from_freq_factors(factors: list[float], head_dim: int, theta: float, original: int = 8192,
                             rtol: float = 1e-4) -> dict | None:
    """The llama3 rope_scaling dict that reproduces llama.cpp's per-channel factors, or None if none does.

    GGUF files of Llama 3.1+ store only the divisors inv_freq / scaled_inv_freq, not the parameters; Meta's
    released models all use low_freq_factor 1, high_freq_factor 4 and original context 8192.
    """
    target = torch.tensor(factors, dtype=torch.float32)
    factor = float(target.max())
    for low, high in ((1.0, 4.0),):
        scaled = llama3_inv_freq(head_dim, theta, factor, low, high, original)
        if torch.allclose(rope_inv_freq(head_dim, theta) / scaled, target, rtol=rtol):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                    "original_max_position_embeddings": original}
    return None


_HF_ONLY_KEYS = ("rope_theta", "type", "rope_type")


def rope_scaling_from_hf(params: dict | None, max_position_embeddings: int) -> dict | None:
    """Our rope_scaling from a transformers `rope_parameters` / legacy `rope_scaling` dict (None for plain RoPE)."""
    from lmforge.common.errors import LmforgeError

    params = dict(params or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise LmforgeError(f"partial rotary embeddings (partial_rotary_factor={params['partial_rotary_factor']}) "
                           "are not supported")
    params.pop("partial_rotary_factor", None)
    if rope_type in (None, "default"):
        return None
    if rope_type not in ROPE_TYPES or rope_type == "ntk":  # freq_factors: from GGUF files (gguf_import.py)
        supported = [t for t in ROPE_TYPES if t != "ntk"]
        raise LmforgeError(f"unsupported RoPE scaling {rope_type!r}; supported: {', '.join(supported)}")
    scaling = {"rope_type": rope_type, **{k: v for k, v in params.items() if k not in _HF_ONLY_KEYS}}
    if rope_type in ("yarn", "llama3"):  # transformers defaults the original length to max_position_embeddings
        scaling.setdefault("original_max_position_embeddings", max_position_embeddings)
    if rope_type == "yarn" and scaling.get("factor") is None:
        scaling["factor"] = max_position_embeddings / scaling["original_max_position_embeddings"]
    try:
        validate_rope_scaling(scaling, head_dim=2 * len(scaling.get("factors", [0])))
    except ConfigError as err:
        raise LmforgeError(f"cannot read this checkpoint's RoPE parameters: {err}") from None
    return scaling


def rope_parameters_to_hf(scaling: dict | None, theta: float) -> dict:
    """transformers' `rope_parameters` dict for our rope_scaling and base."""
    from lmforge.common.errors import LmforgeError

    if scaling is None:
        return {"rope_type": "default", "rope_theta": theta}
    if scaling["rope_type"] in ("ntk", "freq_factors"):
        raise LmforgeError(f"RoPE scaling {scaling['rope_type']!r} has no transformers equivalent; cannot export")
    return {**scaling, "rope_theta": theta}
