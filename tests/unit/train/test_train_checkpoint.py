"""Checkpoints: round trip without pickle, keep-last-K, and corrupted or partial checkpoints detected and
skipped with a message (the resume falls back to the newest valid one)."""

import json

import torch

from lmforge.train.checkpoint import latest_valid_checkpoint, list_checkpoints, save_checkpoint, verify_checkpoint


def _save(root, step, keep=3):
    tensors = {"model": {"w": torch.full((4, 4), float(step))}, "rng": {"torch": torch.get_rng_state()}}
    return save_checkpoint(root, step, tensors, {"step": step, "note": "x"}, keep=keep)


def test_round_trip_and_keep_last_k(tmp_path):
    for step in (2, 4, 6, 8):
        _save(tmp_path, step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000006", "step-00000008"]
    ckpt = latest_valid_checkpoint(tmp_path)
    assert ckpt.step == 8 and ckpt.state["note"] == "x"
    assert torch.equal(ckpt.tensors["model"]["w"], torch.full((4, 4), 8.0))
    assert torch.equal(ckpt.tensors["rng"]["torch"], torch.get_rng_state())
    assert not list(tmp_path.glob(".tmp-*"))


def test_corrupted_checkpoint_is_skipped(tmp_path):
    _save(tmp_path, 2)
    newest = _save(tmp_path, 4)
    data = bytearray((newest / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF  # flip bits inside a tensor: same size, wrong checksum
    (newest / "model.safetensors").write_bytes(bytes(data))
    messages = []
    ckpt = latest_valid_checkpoint(tmp_path, log=messages.append)
    assert ckpt.step == 2
    assert "checksum" in verify_checkpoint(newest)
    assert any("step-00000004" in m and "checksum" in m for m in messages)


def test_partial_and_truncated_checkpoints_are_skipped(tmp_path):
    _save(tmp_path, 2)
    partial = _save(tmp_path, 4)
    (partial / "manifest.json").unlink()  # as if killed before the manifest was written
    truncated = _save(tmp_path, 6)
    (truncated / "state.json").write_text("{")
    staging = tmp_path / ".tmp-step-00000008-123"  # an interrupted save that never got renamed
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"junk")
    messages = []
    ckpt = latest_valid_checkpoint(tmp_path, log=messages.append)
    assert ckpt.step == 2
    assert any("no manifest" in m for m in messages) and any("state.json" in m for m in messages)
    assert not staging.exists()
    assert json.loads((tmp_path / "step-00000002" / "manifest.json").read_text())["step"] == 2


def test_retention_never_deletes_the_checkpoint_just_saved(tmp_path):
    """Higher-numbered leftovers (corrupt checkpoints of an earlier attempt) are not "newer" than a new save."""
    _save(tmp_path, 6, keep=2)
    _save(tmp_path, 8, keep=2)
    (tmp_path / "step-00000008" / "manifest.json").unlink()  # 8 is corrupt: a restarted run saves 2, then 4
    _save(tmp_path, 2, keep=1)
    _save(tmp_path, 4, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004", "step-00000006", "step-00000008"]
    assert verify_checkpoint(tmp_path / "step-00000004") is None  # main deleted 2 and 4, keeping 6 and corrupt 8
