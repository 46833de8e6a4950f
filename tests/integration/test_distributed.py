"""Data parallelism under torchrun on CPU (gloo): 2-rank DDP and FSDP2 reproduce the single-process losses of the
same global batch (fp32, gradient accumulation, clipping), and a 2-rank DDP run killed mid-way and resumed logs
per-step losses bitwise equal to an uninterrupted 2-rank run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmforge.data.corpus import CorpusConfig, corpus_documents
from lmforge.data.pack import PackConfig, pack_documents
from lmforge.tokenizer import train_tokenizer
from lmforge.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    docs = list(corpus_documents(CorpusConfig(documents=300, seed=5)))
    tok = train_tokenizer([d.text for d in docs], type="byte-bpe", vocab_size=300)
    tok.save(root / "tok")
    pack_documents(docs, tok, root / "data", PackConfig(seq_len=32, val_fraction=0.1, seed=5))
    return root / "data", root / "tok"


def _pretrain(out, packed, *extra, ranks=1, batch_size=8, max_steps=STEPS):
    data, tok = packed
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--standalone"]
                if ranks > 1 else [sys.executable])
    return [*launcher, "-m", "lmforge", "pretrain", "--out", str(out), "--data-dir", str(data),
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


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_match_one_process_on_the_same_global_batch(tmp_path, packed, mode):
    _run(_pretrain(tmp_path / "single", packed, batch_size=8))
    _run(_pretrain(tmp_path / mode, packed, "--parallel", mode, ranks=2, batch_size=4))
    want, got = _losses(tmp_path / "single"), _losses(tmp_path / mode)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-5), (step, got, want)
    # the gradient norm (before clipping) catches a world-size factor that Adam's scale invariance would hide
    want_norm, got_norm = _losses(tmp_path / "single", "grad_norm"), _losses(tmp_path / mode, "grad_norm")
    for step in want_norm:
        assert got_norm[step] == pytest.approx(want_norm[step], rel=1e-4), (step, got_norm, want_norm)
    assert want[STEPS] < want[1]  # it trains
    ckpt = sorted((tmp_path / mode / "checkpoints").iterdir())[-1]
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "optimizer.safetensors").is_file()


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
