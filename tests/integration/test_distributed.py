"""Data parallelism under torchrun on CPU (gloo): 2-rank DDP and FSDP2 reproduce the single-process losses of the
same global batch (fp32, gradient accumulation, clipping); a 2-rank DDP run killed mid-way and resumed logs
per-step losses bitwise equal to an uninterrupted 2-rank run; a 2-rank FSDP run saves sharded checkpoints (DCP)
without any rank assembling the full state, and they resume on 2 ranks and in one process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from lmforge.train.checkpoint import verify_checkpoint
from lmforge.train.metrics import read_metrics
from tests.cli_util import assert_user_error
from tests.packed_corpus import pack_corpus

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    pack_corpus(root, documents=300, seed=5, vocab_size=300)
    return root / "data", root / "tok"


def _pretrain(out, packed, *extra, ranks=1, batch_size=8, max_steps=STEPS, spy=False):
    data, tok = packed
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--standalone"]
                if ranks > 1 else [sys.executable])
    program = [str(ROOT / "tests" / "integration" / "save_spy.py")] if spy else ["-m", "lmforge"]
    return [*launcher, *program, "pretrain", "--out", str(out), "--data-dir", str(data),
            "--tokenizer", str(tok), "--preset", "tiny-llama", "--max-steps", str(max_steps),
            "--batch-size", str(batch_size), "--grad-accum", "2", "--checkpoint-every", "2", "--eval-every", "100",
            "--threads", "1", "--no-progress", "--device", "cpu", "--precision", "fp32", "--lr", "1e-2",
            "--set", "log_every=1", "--set", "sample_every=1000", "--set", "peak_tflops=1.0",
            "--set", "export_hf=false", "--set", "warmup_steps=1", "--set", "grad_clip=0.5", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _run(cmd):
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _losses(out, key="loss"):
    return {r["step"]: r[key] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}


@pytest.fixture(scope="module")
def single(tmp_path_factory, packed):
    """A single-process run of the global batch 8."""
    out = tmp_path_factory.mktemp("single") / "run"
    _run(_pretrain(out, packed, batch_size=8))
    return out


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory, packed):
    """A 2-rank FSDP run (global batch 2 x 4) under the save spies (save_spy.py), keeping its step-2 checkpoint,
    with the Hugging Face export."""
    out = tmp_path_factory.mktemp("fsdp") / "run"
    _run(_pretrain(out, packed, "--parallel", "fsdp", "--set", "keep_checkpoints=3", "--set", "export_hf=true",
                   ranks=2, batch_size=4, spy=True))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_match_one_process_on_the_same_global_batch(tmp_path, packed, single, mode, request):
    if mode == "fsdp":
        run = request.getfixturevalue("fsdp")
    else:
        run = tmp_path / mode
        _run(_pretrain(run, packed, "--parallel", mode, ranks=2, batch_size=4))
    want, got = _losses(single), _losses(run)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-5), (step, got, want)
    # the gradient norm (before clipping) catches a world-size factor that Adam's scale invariance would hide
    want_norm, got_norm = _losses(single, "grad_norm"), _losses(run, "grad_norm")
    for step in want_norm:
        assert got_norm[step] == pytest.approx(want_norm[step], rel=1e-4), (step, got_norm, want_norm)
    assert want[STEPS] < want[1]  # it trains
    ckpt = sorted((run / "checkpoints").iterdir())[-1]  # sharded: one DCP file per rank, checksummed
    assert json.loads((ckpt / "manifest.json").read_text())["layout"] == "dcp"
    assert (ckpt / "__0_0.distcp").is_file() and (ckpt / "__1_0.distcp").is_file()
    assert verify_checkpoint(ckpt) is None


@pytest.mark.slow
def test_fsdp_checkpoint_is_sharded_and_no_rank_gathers_the_full_state(fsdp, tmp_path):
    # save_spy.py failed the run had any rank called full_tensor / redistribute / an all-gather / an unshard while
    # saving; here: what each rank handed to dcp.save was its own shards, about half of the state
    for rank in (0, 1):
        saves = json.loads((fsdp / "save_spy" / f"rank{rank}.json").read_text())
        assert len(saves) == STEPS // 2, saves  # steps 2 and 4
        for save in saves:
            assert save["dtensors"] > 0 and save["largest_plain_tensor"] <= 1, save
            assert save["local_bytes"] < 0.55 * save["full_bytes"], save
    for ckpt in (fsdp / "checkpoints" / "step-00000002", fsdp / "checkpoints" / "step-00000004"):
        sizes = [(ckpt / f"__{rank}_0.distcp").stat().st_size for rank in (0, 1)]
        assert max(sizes) < 0.6 * sum(sizes), sizes  # each rank wrote about half
    # the export is the final checkpoint's model, consolidated by PyTorch's own DCP -> torch.save converter
    dcp_to_torch_save(fsdp / "checkpoints" / "step-00000004", tmp_path / "full.pt")
    full = torch.load(tmp_path / "full.pt", weights_only=True)["model"]
    exported = load_file(fsdp / "hf" / "model.safetensors")
    assert torch.equal(exported["model.embed_tokens.weight"], full["embed.weight"])
    assert torch.equal(exported["model.layers.1.mlp.down_proj.weight"], full["layers.1.mlp.down_proj.weight"])


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_on_two_ranks_and_in_one_process(fsdp, packed, tmp_path):
    """The step-2 sharded checkpoint of the 2-rank run, resumed on 2 ranks (FSDP) and in one process (no process
    group, global batch 8 on one rank): steps 3-4 log the uninterrupted run's losses."""
    resumed = {}
    for name, ranks, extra in (("two", 2, ("--parallel", "fsdp")), ("one", 1, ())):
        out = tmp_path / name
        shutil.copytree(fsdp / "checkpoints" / "step-00000002", out / "checkpoints" / "step-00000002")
        kept = [line for line in (fsdp / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 2]
        (out / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
        if ranks == 1:  # another global batch would read other rows: a one-line error that says what fits
            wrong = subprocess.run([*_pretrain(out, packed, batch_size=4), "--resume"], env=_env(),
                                   capture_output=True, text=True, timeout=240)
            assert_user_error(wrong, "global batch 8", "resume on 1 rank(s) with batch_size 8")
        done = _run([*_pretrain(out, packed, *extra, ranks=ranks, batch_size=8 // ranks), "--resume"])
        assert "resumed from" in done.stdout and "step 2" in done.stdout, done.stdout
        resumed[name] = _losses(out)
        assert sorted(resumed[name]) == list(range(1, STEPS + 1))
    want = _losses(fsdp)
    one_final = json.loads((tmp_path / "one" / "checkpoints" / "step-00000004" / "manifest.json").read_text())
    assert "layout" not in one_final and "model.safetensors" in one_final["files"]  # one process: safetensors
    for name, got in resumed.items():
        diff = max(abs(got[s] - want[s]) for s in range(3, STEPS + 1))
        print(f"resume 2 -> {name}: losses {[got[s] for s in range(3, STEPS + 1)]}, max |diff| {diff:.3g}")
        assert diff <= 1e-5, (name, got, want)
    assert [resumed["two"][s] for s in range(3, STEPS + 1)] == [want[s] for s in range(3, STEPS + 1)]  # bitwise


@pytest.mark.slow
def test_two_rank_ddp_killed_and_resumed_is_bitwise_exact(tmp_path, packed):
    steps = 6
    _run(_pretrain(tmp_path / "ref", packed, "--parallel", "ddp", ranks=2, batch_size=4, max_steps=steps))
    out = tmp_path / "killed"
    cmd = _pretrain(out, packed, "--parallel", "ddp", ranks=2, batch_size=4, max_steps=steps)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None and max(_losses(out) or {0: 0}) < 3:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks at once
    proc.wait()
    killed_at = max(_losses(out))
    assert killed_at < steps
    resumed = _run([*cmd, "--resume"])
    assert "resumed from" in resumed.stdout, resumed.stdout
    want, got = _losses(tmp_path / "ref"), _losses(out)
    assert sorted(got) == list(range(1, steps + 1))
    assert [got[s] for s in range(1, steps + 1)] == [want[s] for s in range(1, steps + 1)], killed_at
