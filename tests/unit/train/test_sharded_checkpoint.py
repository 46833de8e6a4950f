"""Sharded (torch.distributed.checkpoint) checkpoints in one process: the same manifest, checksums and retention as
the safetensors ones, an exact round trip, a .metadata pickle that cannot run code, and the data cursor carried
over to another number of ranks (the 2-rank runs are in tests/integration/test_distributed.py)."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from lmforge.common.errors import LmforgeError
from lmforge.data.loader import PackedLoader
from lmforge.model import Transformer
from lmforge.train.checkpoint import list_checkpoints, scan_checkpoints, verify_checkpoint
from lmforge.train.optim import build_optimizer
from lmforge.train.sharded_checkpoint import load_model_shards, load_sharded, save_sharded
from lmforge.train.state import loader_state_for
from tests.unit.train.conftest import tiny_model_config


def _trained(seed: int):
    torch.manual_seed(seed)
    model = Transformer(tiny_model_config(64))
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    model(torch.randint(0, 64, (2, 8))).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    return model, optimizer


def test_round_trip_is_exact_and_checksummed_like_safetensors_checkpoints(tmp_path):
    model, optimizer = _trained(0)
    rng = {"torch": torch.get_rng_state()}
    for step in (1, 2, 3):
        path = save_sharded(tmp_path, step, model, optimizer, {"rng": rng}, {"step": step, "loader": {}}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]  # retention
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["layout"] == "dcp"
    assert {".metadata", "__0_0.distcp", "rng.safetensors", "state.json"} <= set(manifest["files"])
    assert verify_checkpoint(path) is None
    ckpt, skipped = scan_checkpoints(tmp_path, log=lambda _: None)
    assert (ckpt.path, ckpt.layout, skipped) == (path, "dcp", [])

    fresh, fresh_opt = _trained(1)
    load_sharded(path, fresh, fresh_opt)
    for (name, want), got in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(want, got), name
    want, got = optimizer.state_dict(), fresh_opt.state_dict()
    for idx, state in want["state"].items():
        for key, value in state.items():
            assert torch.equal(value, got["state"][idx][key]), (idx, key)
    assert want["param_groups"] == got["param_groups"]
    plain = Transformer(tiny_model_config(64))  # the export path: the model alone, no optimizer
    load_model_shards(path, plain)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values(), strict=True))

    shard = path / "__0_0.distcp"  # one flipped byte in a shard: refused by its checksum, the older one is used
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert verify_checkpoint(path) == "__0_0.distcp does not match its checksum"
    ckpt, skipped = scan_checkpoints(tmp_path, log=lambda _: None)
    assert ckpt.path.name == "step-00000002" and skipped[0][0] == path


class _Marker:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_metadata_that_would_run_code_is_refused(tmp_path):
    model, optimizer = _trained(0)
    path = save_sharded(tmp_path, 1, model, optimizer, {}, {"step": 1}, keep=1)
    marker = _Marker()
    marker.target = str(tmp_path / "pwned")
    (path / ".metadata").write_bytes(pickle.dumps(marker))
    with pytest.raises(LmforgeError, match=r"pathlib.Path.touch is not allowed in a checkpoint's .metadata"):
        load_sharded(path, *_trained(1))
    assert not (tmp_path / "pwned").exists()


def _rows(loader: PackedLoader, batches: int) -> list[np.ndarray]:
    it = iter(loader)
    return [next(it)[0] for _ in range(batches)]


def test_data_cursor_carries_over_to_another_number_of_ranks(packed):
    data = packed[0]
    ranks = [PackedLoader(data, "train", 4, rank=r, world_size=2, seed=7) for r in (0, 1)]
    for loader in ranks:
        _rows(loader, 3)
    saved = ranks[0].state_dict()
    two = [np.concatenate(pair) for pair in zip(*(_rows(loader, 2) for loader in ranks), strict=True)]

    one = PackedLoader(data, "train", 8, seed=7)  # the same global batch of 8 rows on one rank
    one.load_state_dict(loader_state_for(saved, one))
    got = _rows(one, 2)
    for want_batch, got_batch in zip(two, got, strict=True):  # the same rows (dealt round-robin to the 2 ranks)
        assert sorted(map(bytes, want_batch)) == sorted(map(bytes, got_batch))

    other = PackedLoader(data, "train", 2, seed=7)  # 1 rank x 2 rows: not the global batch of the checkpoint
    with pytest.raises(LmforgeError, match=r"global batch 8\); 1 rank\(s\) x batch_size 2 make 2: resume on 1 "
                                           r"rank\(s\) with batch_size 8"):
        loader_state_for(saved, other)
    three = PackedLoader(data, "train", 4, rank=0, world_size=3, seed=7)
    with pytest.raises(LmforgeError, match="global batch of 8 rows, which 3 rank"):
        loader_state_for(saved, three)


def test_a_failure_on_rank_0_is_raised_on_every_rank(tmp_path):
    """Under a process group (here one gloo rank) rank 0's staging / commit failure reaches every rank as one
    error instead of leaving the others in the next collective until the timeout."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model, optimizer = _trained(0)
        with pytest.raises(LmforgeError, match=r"saving a checkpoint failed on rank 0: (FileExistsError|NotADir)"):
            save_sharded(blocker / "checkpoints", 1, model, optimizer, {}, {"step": 1}, keep=1)
        path = save_sharded(tmp_path / "checkpoints", 1, model, optimizer, {}, {"step": 1}, keep=1)
        assert verify_checkpoint(path) is None
    finally:
        dist.destroy_process_group()
