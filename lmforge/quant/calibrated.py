"""`quantize_calibrated`: RTN, AWQ, GPTQ or SmoothQuant over a whole model, block by block, and the module each method
leaves behind (so quant_io rebuilds the same modules from quantization_config.json).

The block linears (`layers.N.*`) get the method; the layers outside the blocks (lm_head, an encoder's head
transform) are rounded to nearest at their QuantConfig width, as every method's reference code leaves them.
"""

from collections.abc import Callable

import torch
from torch import nn

from lmforge.quant.awq import NO_CLIP, ScaledInputLinear, awq_linear
from lmforge.quant.calibration import BlockInputs, LinearStats, block_prefixes, in_block
from lmforge.quant.gptq import gptq_quantize
from lmforge.quant.int_linear import (
    Int4Linear,
    QuantConfig,
    check_group_size,
    empty_quantized_linear,
    quantizable_linears,
    quantized_linear,
    set_submodule,
)
from lmforge.quant.smoothquant import ALPHA, W8A8Linear, smoothing_scales


def is_block_linear(name: str) -> bool:
    return name.startswith("layers.")


def shared_smoothing(linears: dict[str, nn.Linear], stats: dict[str, LinearStats],
                     alpha: float = ALPHA) -> dict[str, torch.Tensor]:
    """SmoothQuant's s for each of a block's linears, one s shared by the linears that read the same input (equal
    input statistics: q/k/v, gate/up), from the largest |W_:,j| over all of them (smoothquant/smooth.py)."""
    groups: list[list[str]] = []
    for name in linears:
        same = next((g for g in groups if stats[g[0]].count == stats[name].count
                     and torch.equal(stats[g[0]].abs_max, stats[name].abs_max)
                     and torch.equal(stats[g[0]].abs_sum, stats[name].abs_sum)), None)
        if same is None:
            groups.append([name])
        else:
            same.append(name)
    out = {}
    for group in groups:
        weight = torch.cat([linears[name].weight.detach().float().cpu() for name in group])
        s = smoothing_scales(stats[group[0]].abs_max, weight, alpha)
        out |= {name: s for name in group}
    return out


def calibrated_linear(linear: nn.Linear, stats: LinearStats, cfg: QuantConfig, name: str,
                      alpha: float = ALPHA, smoothing: torch.Tensor | None = None) -> nn.Module:
    if cfg.method == "awq":
        return awq_linear(linear, stats, cfg.bits, cfg.group_size, clip=not name.endswith(NO_CLIP))
    if cfg.method == "gptq":
        q, scales, zeros = gptq_quantize(linear.weight, stats.hessian(), cfg.bits, cfg.group_size)
        return Int4Linear.from_codes(q, scales, zeros, cfg.group_size, linear.bias).to(linear.weight.device)
    return W8A8Linear.from_linear(linear, stats, alpha, smoothing)


def empty_linear(linear: nn.Linear, cfg: QuantConfig, name: str) -> nn.Module:
    """The (empty) module `quantize_calibrated` put in place of `linear`, for loading a saved state dict."""
    bias = linear.bias is not None
    if cfg.method == "rtn" or not is_block_linear(name):
        return empty_quantized_linear(linear, cfg, name)
    if cfg.method == "smoothquant":
        return W8A8Linear(linear.in_features, linear.out_features, bias=bias)
    inner = Int4Linear(linear.in_features, linear.out_features, cfg.group_size, bias=bias)
    return ScaledInputLinear(inner, linear.in_features) if cfg.method == "awq" else inner


@torch.no_grad()
def quantize_calibrated(model: nn.Module, cfg: QuantConfig, windows: torch.Tensor | None = None,
                        alpha: float = ALPHA, log: Callable[[str], None] | None = None) -> nn.Module:
    """Quantize `model` in place as `cfg` says; windows: [n, T] calibration token ids (calibration.py), needed by
    every method but rtn. Each block is calibrated on the outputs of the blocks already quantized before it."""
    check_group_size(model, cfg)
    targets = dict(quantizable_linears(model, cfg.skip))
    if cfg.method != "rtn":
        if windows is None:
            raise ValueError(f"method {cfg.method} needs calibration windows")
        inputs = BlockInputs(model, windows)
        prefixes = block_prefixes(model)
        for i, prefix in enumerate(prefixes):
            names = [name for name in targets if in_block(name, prefix)]
            stats = inputs.stats(i, names) if names else {}
            smoothing = shared_smoothing({n: targets[n] for n in names}, stats, alpha) \
                if cfg.method == "smoothquant" else {}
            for name in names:
                set_submodule(model, name, calibrated_linear(targets.pop(name), stats[name], cfg, name, alpha,
                                                             smoothing.get(name)))
            if i + 1 < len(prefixes):
                inputs.advance(i)
            if log is not None:
                log(f"{cfg.method}: {prefix} ({len(names)} linears)")
    for name, linear in targets.items():  # rtn, and the layers outside the blocks
        set_submodule(model, name, quantized_linear(linear, cfg.bits_for(name), cfg.group_size)
                      .to(linear.weight.device))
    model.quant_config = cfg
    return model
