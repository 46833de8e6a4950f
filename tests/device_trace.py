"""A second device, simulated on the CPU: catches code that would mix CPU and CUDA tensors, without a GPU.

`DeviceTrace(model, ...)` is a TorchFunctionMode that tags every tensor as "on the device" or "on the host" the way
CUDA would place it: the modules' parameters and buffers are on the device; a factory call (torch.tensor, zeros,
arange, ...) given a `device=` lands there, one without lands on the host (the CPU, as it would beside a GPU);
`.to(device)` / `.cuda()` move a tensor there and `.cpu()` back; every other op's result is on the device when an
input is. An op that takes a device tensor and a host tensor of one or more dimensions is what CUDA refuses
("Expected all tensors to be on the same device"): it is recorded with the lmforge line that called it. Indexing and
copies, which CUDA allows across devices, and 0-dim host tensors (CUDA takes CPU scalars) are not faults.
A plain tensor attribute of a module (not a buffer) stays on the host after `model.to("cuda")`: it is caught too.
"""

from __future__ import annotations

import contextlib
import traceback
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

TAG = "_lmforge_on_device"
ROOT = str(Path(__file__).resolve().parents[1] / "lmforge")
FACTORIES = {torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.empty, torch.full, torch.arange,
             torch.rand, torch.randn, torch.randint, torch.linspace, torch.eye, torch.randperm, torch.tril_indices,
             torch.triu_indices, torch.scalar_tensor}
CROSS_DEVICE_OK = {torch.Tensor.__setitem__, torch.Tensor.__getitem__, torch.Tensor.copy_,
                   torch._has_compatible_shallow_copy_type}  # the last: Module.to / .cpu() swapping a parameter


def on_device(t: torch.Tensor) -> bool:
    return getattr(t, TAG, False)


def _mark(t: object, value: bool = True) -> None:
    if isinstance(t, torch.Tensor):
        with contextlib.suppress(AttributeError, RuntimeError):  # a tensor type that takes no attributes
            setattr(t, TAG, value)


class DeviceTrace(TorchFunctionMode):
    def __init__(self, *modules: torch.nn.Module):
        super().__init__()
        self.faults: list[str] = []
        for module in modules:
            self.place(module)

    def __enter__(self):
        original = self._deepcopy = torch.nn.Parameter.__deepcopy__

        def deepcopy(param, memo):  # a copied parameter (a reference model) stays on its device
            out = original(param, memo)
            _mark(out, on_device(param))
            return out

        torch.nn.Parameter.__deepcopy__ = deepcopy
        self._new = torch.nn.Parameter.__dict__["__new__"]
        new = self._new.__func__

        def parameter(cls, data=None, requires_grad=True):  # nn.Parameter(t) is where t was (e.g. a fused q/k/v)
            out = new(cls, data, requires_grad)
            _mark(out, data is not None and on_device(data))
            return out

        torch.nn.Parameter.__new__ = staticmethod(parameter)
        return super().__enter__()

    def __exit__(self, *exc):
        torch.nn.Parameter.__deepcopy__ = self._deepcopy
        torch.nn.Parameter.__new__ = self._new  # the staticmethod itself, as it was
        return super().__exit__(*exc)

    def place(self, module: torch.nn.Module) -> None:
        """Put a module on the simulated device (its parameters and buffers)."""
        for t in (*module.parameters(), *module.buffers()):
            _mark(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.Tensor.cpu and out is args[0]:  # on a GPU .cpu() copies: the device tensor stays there
            out = out.clone()
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if func in FACTORIES or not inputs:
            where = kwargs.get("device") is not None or func is torch.Tensor.cuda
        elif func is torch.Tensor.cpu:
            where = False
        elif func is torch.Tensor.to or getattr(func, "__name__", "").startswith("new_"):
            target = [a for a in (*args[1:], kwargs.get("device"))
                      if isinstance(a, (str, torch.device, torch.Tensor))]
            if func is not torch.Tensor.to:  # new_zeros & co: the source's device unless given
                where = kwargs.get("device") is not None or on_device(args[0])
            elif target:
                where = on_device(target[0]) if isinstance(target[0], torch.Tensor) else True
            else:
                where = on_device(args[0])
        else:
            device = [t for t in inputs if on_device(t)]
            host = [t for t in inputs if not on_device(t) and t.dim() > 0]
            attribute = getattr(func, "__name__", "") in ("__get__", "__set__")  # e.g. p.grad = ...: no compute
            if device and host and func not in CROSS_DEVICE_OK and not attribute:
                self.faults.append(f"{getattr(func, '__qualname__', func)} mixes device and host tensors "
                                   f"{[tuple(t.shape) for t in host]} at {caller()}")
            where = bool(device)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and where:
                _mark(t)
        return out


def caller() -> str:
    """The innermost lmforge (not test) frame of the current stack: file:line function."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if frame.filename.startswith(ROOT):
            return f"{Path(frame.filename).relative_to(Path(ROOT).parent)}:{frame.lineno} {frame.name}"
    return "(outside lmforge)"
