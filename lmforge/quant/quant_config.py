"""What `quantize_model` did (QuantConfig): widths, group size, skipped layers, method; saved next to the weights as
quantization_config.json and read back by the loader.
"""

from dataclasses import dataclass

from lmforge.common.errors import ConfigError
from lmforge.quant.int_codes import GROUP_SIZES

BITS = (8, 4, 3)  # int3: int4 codes restricted to 0..7 (group_grid.py), same kernel and file layout
METHODS = ("rtn", "awq", "gptq", "smoothquant")  # round to nearest, or the calibrated methods (quant/calibrated.py)


@dataclass(frozen=True)
class QuantConfig:
    """What `quantize_model` did: saved next to the weights as quantization_config.json."""

    bits: int = 8
    group_size: int = 32  # int4 only: input channels sharing one scale and zero
    skip: tuple[str, ...] = ()  # fnmatch patterns of module names left in floating point (e.g. "lm_head")
    # The output projection's own width. int8 by default even for int4 models: on SmolLM2 an int4 lm_head costs
    # +4.3% perplexity against +0.2% for int8, and a float one is the largest single read of every decode step.
    head_bits: int = 8
    # How the block linears were quantized: "rtn" (round to nearest), "awq" / "gptq" (3 or 4 bits, calibrated),
    # "smoothquant" (8 bits, int8 activations too). The layers outside the blocks (lm_head) are always rtn.
    method: str = "rtn"

    def __post_init__(self):
        for name in ("bits", "head_bits"):
            if getattr(self, name) not in BITS:
                raise ConfigError(f"QuantConfig.{name} must be one of {BITS}, got {getattr(self, name)!r}")
        if self.bits in (3, 4) and self.group_size not in GROUP_SIZES:
            raise ConfigError(f"QuantConfig.group_size must be one of {GROUP_SIZES} for int{self.bits}, "
                              f"got {self.group_size!r}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown quantization method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.method in ("awq", "gptq") and self.bits not in (3, 4):
            raise ConfigError(f"method {self.method} quantizes to 3 or 4 bits, got bits={self.bits}")
        if self.method == "smoothquant" and self.bits != 8:
            raise ConfigError(f"method smoothquant is W8A8: it needs bits=8, got bits={self.bits}")
        object.__setattr__(self, "skip", tuple(self.skip))

    def to_dict(self) -> dict:
        return {"quant_method": "lmforge-weight-only" if self.method != "smoothquant" else "lmforge-w8a8",
                "bits": self.bits, "group_size": self.group_size, "skip": list(self.skip),
                "head_bits": self.head_bits, "method": self.method}

    @classmethod
    def from_dict(cls, data: dict) -> "QuantConfig":
        return cls(bits=data.get("bits", 8), group_size=data.get("group_size", 32), skip=tuple(data.get("skip", ())),
                   head_bits=data.get("head_bits", 8), method=data.get("method", "rtn"))

    def bits_for(self, name: str) -> int:
        return self.head_bits if name == "lm_head" else self.bits
