"""The storage of Int8Linear / Int4Linear once lmforge's int8 / int4 kernels run them: one copy of the weights.

When a layer first runs on the kernels (lmforge/kernels/quant_linear.py), its codes and scales are packed into the
kernel's layout and the saved-layout tensors are freed, so a quantized model holds its weights once, not twice. The
saved layout is rebuilt from the packed one (exactly: packing only moves bits) when a state dict is taken, when it is
read (`layer.weight`, `dequantize`), and before the layer moves (`.to`), so the saved format does not change.
`concat_outputs` fuses layers reading the same input (q/k/v, gate/up) into one, for `prepare_for_inference`.
"""

import torch
from torch import nn

from lmforge.kernels.quant_linear import quant_linear_ops
from lmforge.quant.int_codes import KERNEL_DTYPE

PACKED = ("kernel_codes", "kernel_scales")  # non-persistent buffers holding the kernel's layout once packed


class KernelPacked(nn.Module):
    """A quantized linear whose storage is either its saved layout (`SAVED` buffers) or its kernel's (`PACKED`)."""

    SAVED: dict[str, int] = {}  # saved-layout buffer -> its output dimension (concat_outputs joins along it)
    kernel_linear = None  # subclasses: the kernel's call, staticmethod(quant_linear.int8_linear / int4_linear)
    in_features: int
    out_features: int

    def _init_kernel_storage(self) -> None:
        for name in PACKED:
            self.register_buffer(name, None, persistent=False)
        self.kernel_pack = None  # (kernel_codes, kernel_scales) as a plain attribute: read on every decode call

    # subclasses: the kernel's layout from the saved tensors, and back
    def _pack_saved(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _unpack(self, pack: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _like(self, out_features: int) -> "KernelPacked":
        raise NotImplementedError

    def _kernel_forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """forward on lmforge's kernel, or None where it does not run (the subclass then runs PyTorch's op)."""
        if self.kernel_pack is not None and x.dtype == KERNEL_DTYPE and x.device.type == "cpu":  # decode: lean
            return self.kernel_linear(x, self.kernel_pack, self.bias, self.out_features)
        pack = self._kernel_pack(x)
        if pack is None:
            return None
        # float32 sums for float32 callers (no bf16 rounding of the output)
        return self.kernel_linear(x.to(KERNEL_DTYPE), pack, self.bias, self.out_features,
                                  float_out=x.dtype != KERNEL_DTYPE).to(x.dtype)

    def is_packed(self) -> bool:
        return self._buffers.get("kernel_codes") is not None

    def storage_device(self) -> torch.device:
        return next(t for t in self._buffers.values() if t is not None).device

    def _kernel_pack(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The kernel's layout (packed on first use, the saved tensors then freed), None where the kernel does not
        run."""
        if x.device.type != "cpu" or self.storage_device().type != "cpu" or quant_linear_ops() is None:
            return None
        if self.is_packed():
            self.kernel_pack = (self._buffers["kernel_codes"], self._buffers["kernel_scales"])
            return self.kernel_pack
        pack = self._pack_saved()
        self._buffers["kernel_codes"], self._buffers["kernel_scales"] = pack
        for name in self.SAVED:
            del self._buffers[name]
        self.kernel_pack = pack
        return pack

    def _drop_pack(self) -> None:
        for name in PACKED:
            self._buffers[name] = None
        self.kernel_pack = None

    def _restore_saved(self) -> None:
        """Back to the saved layout (unpacked from the kernel's), the packed copy dropped: one copy either way."""
        saved = self._unpack((self._buffers["kernel_codes"], self._buffers["kernel_scales"]))
        self._drop_pack()
        self._buffers = {**saved, **self._buffers}  # the saved buffers first, in their registration order

    def __getattr__(self, name: str):
        if name in type(self).SAVED:
            buffers = self.__dict__.get("_buffers", {})
            if name not in buffers and buffers.get("kernel_codes") is not None:
                self._restore_saved()
                return self._buffers[name]
        return super().__getattr__(name)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)  # bias (the saved buffers are freed if packed)
        if self.is_packed():
            pack = (self._buffers["kernel_codes"], self._buffers["kernel_scales"])
            for name, tensor in self._unpack(pack).items():
                destination[prefix + name] = tensor

    def _load_from_state_dict(self, *args, **kwargs):
        if self.is_packed():
            self._restore_saved()
        super()._load_from_state_dict(*args, **kwargs)
        self._drop_pack()

    def _apply(self, fn, recurse=True):
        if self.is_packed():  # the kernel's layout is for this CPU only: move (or cast) the saved one
            self._restore_saved()
        return super()._apply(fn, recurse)

    @classmethod
    def concat_outputs(cls, layers: list[nn.Module]) -> "KernelPacked | None":
        """One layer computing `layers` side by side (their outputs concatenated), or None when they differ in kind,
        input size, group size or bias. Inference only: prepare_for_inference's q/k/v and gate/up fusion."""
        first = layers[0]
        if any(type(m) is not cls or m.in_features != first.in_features or (m.bias is None) != (first.bias is None)
               or getattr(m, "group_size", None) != getattr(first, "group_size", None) for m in layers):
            return None
        fused = first._like(sum(m.out_features for m in layers))
        for name, dim in cls.SAVED.items():
            fused._buffers[name] = torch.cat([getattr(m, name) for m in layers], dim)
        if first.bias is not None:
            fused.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]), requires_grad=False)
        return fused
