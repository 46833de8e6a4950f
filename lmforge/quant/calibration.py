"""Calibration for the data-aware methods (AWQ, GPTQ, SmoothQuant, Wanda): token windows cut from a text, and what
each method reads of a linear layer's inputs, gathered with forward hooks one Transformer block at a time, so a
block sees the outputs of the blocks already quantized or pruned before it (GPTQ's and Wanda's sequential order).
"""

import torch
from torch import nn

from lmforge.common.errors import LmforgeError

DEFAULT_SAMPLES = 64
DEFAULT_SEQ_LEN = 128
_CHARS_PER_TOKEN = 16  # generous: only this much of a long text is tokenized


def calibration_windows(text: str, tokenizer, samples: int = DEFAULT_SAMPLES,
                        seq_len: int = DEFAULT_SEQ_LEN, source: str = "calibration text") -> torch.Tensor:
    """[n, seq_len] token ids (n <= samples): consecutive windows from the start of `text`; a text shorter than one
    window gives one shorter window."""
    if samples < 1 or seq_len < 2:
        raise LmforgeError(f"calibration needs samples >= 1 and seq_len >= 2, got {samples} and {seq_len}")
    ids = tokenizer.encode(text[:samples * seq_len * _CHARS_PER_TOKEN], add_special_tokens=False) \
        if text.strip() else []
    if len(ids) < 2:
        raise LmforgeError(f"{source} is empty: it gives {len(ids)} token(s), calibration needs at least 2")
    n = min(samples, len(ids) // seq_len)
    if n == 0:
        return torch.tensor([ids], dtype=torch.long)
    return torch.tensor(ids[:n * seq_len], dtype=torch.long).reshape(n, seq_len)


class LinearStats:
    """One linear layer's inputs X [n, in] summed up: the Gram matrix X^T X (GPTQ's Hessian is 2/n of it; it also
    gives AWQ's output error in closed form), mean |x| per input channel (AWQ), max |x| (SmoothQuant), and the
    squared column norms ||X_j||^2 = diag(X^T X) (Wanda)."""

    def __init__(self, in_features: int):
        self.gram = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.abs_sum = torch.zeros(in_features, dtype=torch.float64)
        self.abs_max = torch.zeros(in_features)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float().cpu()
        self.gram += (x.T @ x).double()
        self.abs_sum += x.abs().sum(0).double()
        self.abs_max = torch.maximum(self.abs_max, x.abs().amax(0))
        self.count += x.shape[0]

    @property
    def abs_mean(self) -> torch.Tensor:
        return (self.abs_sum / max(self.count, 1)).float()

    @property
    def column_norms(self) -> torch.Tensor:
        return self.gram.diagonal().clamp(min=0).sqrt().float()

    def hessian(self) -> torch.Tensor:
        """2 X^T X / n: the Hessian of the layer's squared output error in its weights (GPTQ, eq. 1)."""
        return (2 * self.gram / max(self.count, 1)).float()


def block_prefixes(model: nn.Module) -> list[str]:
    """'layers.0', 'layers.1', ...: the Transformer blocks, in order (decoder and encoder alike)."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise LmforgeError(f"{type(model).__name__} has no `layers` list of blocks to calibrate")
    return [f"layers.{i}" for i in range(len(layers))]


def in_block(name: str, prefix: str) -> bool:
    return name.startswith(prefix + ".")


class BlockInputs:
    """The calibration windows' hidden states at the input of one block at a time.

    One forward pass captures the first block's input and every block's other arguments (RoPE tables, masks);
    `advance(i)` then runs block i, as it is now (quantized or pruned), to get block i + 1's input. So each block is
    calibrated on what the blocks before it produce, for the cost of about two forward passes in all, not one
    forward pass per block.
    """

    def __init__(self, model: nn.Module, windows: torch.Tensor, batch_size: int = 8):
        self.model = model
        self.layers = model.layers
        self.x: list[torch.Tensor] = []
        self.rest: list[list[tuple]] = [[] for _ in self.layers]  # per block, per batch: (args after x, kwargs)

        def capture(i):
            def hook(module, args, kwargs):
                if i == 0:
                    self.x.append(args[0])
                self.rest[i].append((args[1:], kwargs))
            return hook

        hooks = [layer.register_forward_pre_hook(capture(i), with_kwargs=True) for i, layer in enumerate(self.layers)]
        device = next(model.parameters()).device
        try:
            with torch.no_grad():
                for batch in windows.split(batch_size):
                    model.hidden_states(batch.to(device))
        finally:
            for hook in hooks:
                hook.remove()

    @torch.no_grad()
    def run(self, i: int) -> list[torch.Tensor]:
        return [self.layers[i](x, *args, **kwargs) for x, (args, kwargs) in zip(self.x, self.rest[i], strict=True)]

    @torch.no_grad()
    def stats(self, i: int, names: list[str]) -> dict[str, "LinearStats"]:
        """Run block i and sum up the inputs of its modules `names` (full names in the model)."""
        stats, hooks = {}, []
        for name in names:
            module = self.model.get_submodule(name)
            stats[name] = LinearStats(module.in_features)
            hooks.append(module.register_forward_pre_hook(lambda m, args, s=stats[name]: s.add(args[0])))
        try:
            self.run(i)
        finally:
            for hook in hooks:
                hook.remove()
        return stats

    def advance(self, i: int) -> None:
        """Block i is final: its outputs become the inputs of block i + 1."""
        self.x = self.run(i)
