"""Build modules on the meta device without running their initialisers.

Loaders build a model on the meta device and then assign the file's weights, so the random init is wasted; worse,
on a meta tensor the first `torch.nn.init` call reaches a meta kernel written in Python whose first call imports
torch._dynamo: 1.2 s of CPU per process (pretrain-1m, measured), paid by every `lmforge.load`. Inside `on_meta()`
the nn.init functions return meta tensors untouched (initialising a tensor that holds no data is a no-op anyway) and
call the real initialiser for any other tensor, so another thread building a real model meanwhile is unaffected.
"""

import contextlib
import functools
import threading

import torch
from torch.nn import init

_INITS = ("normal_", "uniform_", "trunc_normal_", "constant_", "ones_", "zeros_", "kaiming_uniform_",
          "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "orthogonal_")
_lock = threading.Lock()
_users = 0
_real: dict = {}


def _skip_meta(real):
    @functools.wraps(real)
    def initialise(tensor, *args, **kwargs):
        return tensor if tensor.is_meta else real(tensor, *args, **kwargs)

    return initialise


@contextlib.contextmanager
def on_meta():
    """`with on_meta(): model = Transformer(cfg)`: parameters on the meta device, never initialised."""
    global _users
    with _lock:
        if _users == 0:
            for name in _INITS:
                _real[name] = getattr(init, name)
                setattr(init, name, _skip_meta(_real[name]))
        _users += 1
    try:
        with torch.device("meta"):
            yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for name, real in _real.items():
                    setattr(init, name, real)
