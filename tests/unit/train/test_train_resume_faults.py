"""`lmforge pretrain` against damaged run directories: corrupt checkpoints are refused on --resume (or set aside
with --fresh), retention keeps the newest valid checkpoint, metrics.jsonl never repeats a step, the RNG state after
a resume equals the uninterrupted run's, an unwritable --out is a one-line error, and outputs honour the umask."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.train.checkpoint import verify_checkpoint
from lmforge.train.metrics import measure_peak_flops, read_metrics
from tests.cli_util import assert_user_error

ROOT = Path(__file__).resolve().parents[3]


def _pretrain(out, data, tok, *extra):
    """The fastest real run: tiny-llama on the packed fixture, 2-step checkpoints, the matmul peak measured
    (no peak_tflops) so that the RNG check sees measure_peak_flops run after the restore."""
    command = [sys.executable, "-m", "lmforge", "pretrain", "--out", str(out), "--data-dir", str(data),
               "--tokenizer", str(tok), "--preset", "tiny-llama", "--batch-size", "4", "--checkpoint-every", "2",
               "--eval-every", "100", "--threads", "1", "--no-progress", "--device", "cpu", "--precision", "fp32",
               "--set", "log_every=1", "--set", "sample_every=1000", "--set", "keep_checkpoints=2", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _steps(run):
    return [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]


def _corrupt(checkpoint):
    data = bytearray((checkpoint / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF  # same size, wrong checksum
    (checkpoint / "model.safetensors").write_bytes(bytes(data))


@pytest.fixture(scope="module")
def reference(packed, tmp_path_factory):
    """An uninterrupted 4-step run (checkpoints at steps 2 and 4, Hugging Face export) made under umask 027."""
    data, tok, _ = packed
    run = tmp_path_factory.mktemp("reference") / "run"
    old = os.umask(0o027)  # inherited by the CLI; not the default 022, so matching modes prove it is honoured
    try:
        result = _pretrain(run, data, tok, "--max-steps", "4", "--set", "export_hf=true")
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    return run


def test_outputs_honour_the_umask(reference):
    checked = [reference / "hf" / "model.safetensors", reference / "checkpoints" / "step-00000004" / "rng.safetensors"]
    for path in [reference, *reference.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o750 if path.is_dir() else 0o640), (path, oct(mode))  # main: 0600 safetensors
    assert all(p.is_file() for p in checked)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_measure_peak_flops_leaves_the_global_rng_alone(device):
    cuda = torch.cuda.is_available()
    before = torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else []
    measure_peak_flops(torch.device(device), torch.float32, size=64, reps=1)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all() if cuda else [], before[1],
                                                 strict=True))


def test_resumed_rng_state_equals_the_uninterrupted_run(reference, packed, tmp_path):
    data, tok, _ = packed
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    shutil.rmtree(run / "checkpoints" / "step-00000004")  # as if stopped right after the step-2 checkpoint
    result = _pretrain(run, data, tok, "--max-steps", "4", "--resume")
    assert result.returncode == 0, result.stderr
    ours = load_file(run / "checkpoints" / "step-00000004" / "rng.safetensors")
    want = load_file(reference / "checkpoints" / "step-00000004" / "rng.safetensors")
    assert ours.keys() == want.keys() and all(torch.equal(ours[k], want[k]) for k in want)
    assert _steps(run) == [1, 2, 3, 4]


def test_corrupt_checkpoints_retention_and_fresh_start(reference, packed, tmp_path):
    data, tok, _ = packed
    run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    shutil.copytree(reference, run)
    # A corrupt checkpoint numbered above everything the resumed run will save (an interrupted run's, say).
    shutil.copytree(ckpts / "step-00000004", ckpts / "step-00000009")
    _corrupt(ckpts / "step-00000009")
    result = _pretrain(run, data, tok, "--max-steps", "6", "--resume", "--set", "keep_checkpoints=1")
    assert result.returncode == 0, result.stderr
    # Retention kept the newest valid checkpoint (main deleted it: step 9 counted as newer); 9 was set aside.
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000006", "step-00000009.corrupt"]
    assert verify_checkpoint(ckpts / "step-00000006") is None
    assert _steps(run) == [1, 2, 3, 4, 5, 6]

    _corrupt(ckpts / "step-00000006")  # now every checkpoint is corrupt
    metrics_before = (run / "metrics.jsonl").read_text()
    refused = _pretrain(run, data, tok, "--max-steps", "8", "--resume")
    assert_user_error(refused, "no valid checkpoint", "step-00000006", "checksum", "--fresh")
    assert (run / "metrics.jsonl").read_text() == metrics_before  # main restarted at 0 and appended steps 1..

    fresh = _pretrain(run, data, tok, "--max-steps", "2", "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert _steps(run) == [1, 2]  # each step once
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000002"]
    assert sorted(p.name for p in (run / "checkpoints.old").iterdir()) == ["step-00000006", "step-00000009.corrupt"]


def test_hand_edited_manifest_is_skipped_with_its_reason(reference, packed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    escape = {"state.json": {"sha256": "0", "bytes": 1}, "../../x": {"sha256": "0", "bytes": 1}}
    for step, manifest in ((2, []), (4, {"format": "lmforge-checkpoint-v1", "step": 4, "files": escape})):
        (run / "checkpoints" / f"step-0000000{step}" / "manifest.json").write_text(json.dumps(manifest))
    data, tok, _ = packed
    result = _pretrain(run, data, tok, "--max-steps", "6", "--resume")
    assert_user_error(result, "step-00000004: manifest.json lists '../../x'",
                      "step-00000002: manifest.json holds a list")


def test_unwritable_out_is_a_one_line_error(packed):
    data, tok, _ = packed  # (an --out under a regular file takes the same path: test_hostile_model_files.py)
    assert_user_error(_pretrain("/proc/lmforge-test/run", data, tok, "--max-steps", "2"),
                      "cannot write --out /proc/lmforge-test/run", "cannot create")
