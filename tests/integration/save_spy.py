"""`python -m lmforge ARGS` with spies on checkpoint saving, launched per rank by torchrun: while `Trainer.save`
runs, anything that assembles a full tensor on a rank (DTensor.full_tensor / redistribute, a tensor all-gather,
an FSDP unshard) fails the run, and each rank records what it handed to dcp.save (its local shard bytes against
the full tensors' bytes) in <run dir>/save_spy/rank<R>.json. Used by test_distributed.py.
"""

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.distributed.checkpoint as dcp
import torch.distributed.distributed_c10d as c10d
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from lmforge.cli.main import main
from lmforge.train.trainer import Trainer

saving = False
records: list[dict] = []


def _forbidden(name, fn):
    def guarded(*args, **kwargs):
        if saving:
            raise AssertionError(f"{name} called while saving a checkpoint: a rank assembles full tensors")
        return fn(*args, **kwargs)
    return guarded


for owner, names in ((DTensor, ("full_tensor", "redistribute")), (FSDPModule, ("unshard",)),
                     (dist, ("all_gather_into_tensor",)), (c10d, ("all_gather_into_tensor", "_all_gather_base")),
                     (funcol, ("all_gather_tensor", "all_gather_tensor_autograd"))):
    for attr in names:
        setattr(owner, attr, _forbidden(f"{getattr(owner, '__name__', owner)}.{attr}", getattr(owner, attr)))


def _tensors(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _tensors(value)
    elif isinstance(tree, list | tuple):
        for value in tree:
            yield from _tensors(value)
    elif hasattr(tree, "numel"):
        yield tree


def _spy_save(state_dict, *args, **kwargs):
    local = full = plain_elements = dtensors = 0
    for t in _tensors(state_dict):
        size = t.element_size()
        full += t.numel() * size
        if isinstance(t, DTensor):
            dtensors += 1
            local += t.to_local().numel() * size
        else:  # a plain tensor is held whole by this rank (optimizer step counters are scalars)
            local += t.numel() * size
            plain_elements = max(plain_elements, t.numel())
    records.append({"local_bytes": local, "full_bytes": full, "dtensors": dtensors,
                    "largest_plain_tensor": plain_elements})
    return _dcp_save(state_dict, *args, **kwargs)


def _spy_trainer_save(self):
    global saving
    saving = True
    try:
        return _trainer_save(self)
    finally:
        saving = False
        out = Path(self.run_dir) / "save_spy"  # written at each save: a torchrun rank ends with os._exit
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{os.environ.get('RANK', 0)}.json").write_text(json.dumps(records))


_dcp_save, dcp.save = dcp.save, _spy_save
_trainer_save, Trainer.save = Trainer.save, _spy_trainer_save

if __name__ == "__main__":
    sys.argv = ["lmforge", *sys.argv[1:]]
    main()
