"""Sharded checkpoints of distributed runs through torch.distributed.checkpoint (DCP, as torchtitan): every rank
writes only its own shards of the model and optimizer state (`get_state_dict` without `full_state_dict`: under
FSDP2 DTensors, never gathered) into checkpoint.py's staging directory, which rank 0 then checksums and renames
like a single-process checkpoint. DCP reshards on load: a checkpoint reloads on any number of ranks, or in one
process without a process group.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from lmforge.common.errors import LmforgeError
from lmforge.train.checkpoint import commit_checkpoint, stage_checkpoint, write_state_files

LAYOUT = "dcp"


def _single_process() -> bool:
    return not (dist.is_available() and dist.is_initialized())


def _from_rank0(value):
    """Rank 0's `value` on every rank (a collective, so also a barrier); the value itself in a single process."""
    if _single_process():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def _quiet():
    """DCP warns on every single-process call that it assumes a single process: that is the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def app_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """{"model", "optimizer"} state dicts keyed by parameter name (the same names on any number of ranks); under
    FSDP2 their tensors are the DTensors whose local shards this rank holds, nothing gathered."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optimizer": optim_sd}


def save_sharded(root: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                 tensors: dict[str, dict[str, torch.Tensor]], state: dict, keep: int) -> Path:
    """Collective (every rank of the process group calls it; or one process without one): each rank writes its
    shards with dcp.save; rank 0 adds `tensors` (safetensors) and `state` (state.json) and commits atomically.
    Returns root/step-XXXXXXXX on every rank once it is in place."""
    tmp = _on_rank0(lambda: stage_checkpoint(root, step))  # the others wait until it exists
    with _quiet():
        dcp.save(app_state(model, optimizer), storage_writer=FileSystemWriter(tmp), no_dist=_single_process())

    def commit() -> Path:  # dcp.save returned: every rank's shards and rank 0's .metadata are written
        write_state_files(tmp, tensors, state)
        return commit_checkpoint(tmp, step, keep, layout=LAYOUT)

    return _on_rank0(commit)


def _on_rank0(work):
    """work() on rank 0, its result on every rank; its failure (e.g. a full disk) raised on every rank, which would
    otherwise wait in the next collective until the process group's timeout."""
    if _single_process():
        return work()
    value = error = None
    if dist.get_rank() == 0:
        try:
            value = work()
        except Exception as err:  # reported on every rank below
            error = f"{type(err).__name__}: {err}"
    value, error = _from_rank0((value, error))
    if error is not None:
        raise LmforgeError(f"saving a checkpoint failed on rank 0: {error}")
    return value


def load_sharded(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Restore model and optimizer from a sharded checkpoint: collective under a process group (each rank reads
    the pieces of its own shards, whatever the number of ranks that saved), a plain read in a single process."""
    state = app_state(model, optimizer)
    _dcp_load(state, path, no_dist=_single_process())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def load_model_shards(path: Path, model: nn.Module) -> None:
    """Fill a plain (unsharded) `model` from a sharded checkpoint in this process alone, no collective: e.g. rank 0
    consolidating the final export from the last checkpoint while the other ranks wait."""
    state = {"model": get_model_state_dict(model)}
    _dcp_load(state, path, no_dist=True)
    set_model_state_dict(model, state["model"])


def _dcp_load(state: dict, path: Path, no_dist: bool) -> None:
    try:
        _vet_metadata(Path(path) / ".metadata")
    except Exception as err:  # refused, or not a pickle at all
        raise LmforgeError(f"sharded checkpoint {path}: .metadata refused ({type(err).__name__}: {err})") from None
    try:
        with _quiet():
            dcp.load(state, storage_reader=_Reader(path), no_dist=no_dist)
    except Exception as err:  # DCP wraps a missing key or a damaged shard in its own CheckpointException
        raise LmforgeError(f"sharded checkpoint {path} cannot be restored into this model: "
                           f"{type(err).__name__}: {str(err).strip()[:500]}") from None


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's .metadata is a pickle: allow only the classes DCP writes there (never arbitrary code on --resume)."""

    MODULES = ("torch.distributed.checkpoint.metadata",)
    NAMES = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
             ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"), ("collections", "OrderedDict"),
             ("torch.distributed.checkpoint.filesystem", "_StorageInfo")}

    def find_class(self, module: str, name: str):
        if (module in self.MODULES or (module, name) in self.NAMES
                or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint's .metadata")


def _vet_metadata(file: Path) -> None:
    with open(file, "rb") as handle:
        _MetadataUnpickler(handle).load()


class _Reader(FileSystemReader):
    """FileSystemReader that vets every metadata file with _MetadataUnpickler before DCP unpickles it."""

    def read_metadata(self, *args, **kwargs):
        rank = kwargs.get("rank")
        _vet_metadata(Path(self.path) / (".metadata" if rank is None else f"__{rank}.metadata"))
        return super().read_metadata(*args, **kwargs)
