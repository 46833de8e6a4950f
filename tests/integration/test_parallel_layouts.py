"""Tensor, sequence, expert and pipeline parallelism composed with FSDP2 on a 2-D device mesh, under torchrun on CPU
(gloo, 4 processes): TP=2 x FSDP=2, PP=2 x DP=2 (1F1B) and TP=2 x PP=2 (GPipe) log the per-step losses and gradient
norms of the single-process run of the same global batch (fp32, 20 steps, gradient accumulation, clipping), for a
dense model and a MoE model (experts split over the tp ranks); the bytes of parameters each rank holds are what
`lmforge calc --tp --pp --dp` predicts; a checkpoint saved in one layout resumes in another (DCP reshards)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.data.corpus import CorpusConfig, corpus_documents
from lmforge.data.pack import PackConfig, pack_documents
from lmforge.model.presets import get_preset
from lmforge.tokenizer import train_tokenizer
from lmforge.train.metrics import read_metrics
from tests.cli_util import run_cli

ROOT = Path(__file__).resolve().parents[2]
STEPS = 20
GLOBAL_BATCH = 8
LAYOUTS = {  # name -> (flags, tp, pp); dp = 4 / (tp * pp), each dp rank reading GLOBAL_BATCH / dp rows
    "tp2-fsdp2": (("--tp", "2"), 2, 1),
    "pp2-dp2": (("--pp", "2", "--pp-schedule", "1f1b"), 1, 2),
    "tp2-pp2": (("--tp", "2", "--pp", "2", "--pp-schedule", "gpipe"), 2, 2),
}
TINY = dict(dim=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn_dim=64, n_layers=2, tie_embeddings=False)
MODELS = {"dense": get_preset("tiny-llama", **TINY),
          "moe": get_preset("tiny-moe", **TINY, n_routed_experts=4, n_experts_per_tok=2, moe_ffn_dim=32)}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    docs = list(corpus_documents(CorpusConfig(documents=300, seed=5)))
    tok = train_tokenizer([d.text for d in docs], type="byte-bpe", vocab_size=300)
    tok.save(root / "tok")
    pack_documents(docs, tok, root / "data", PackConfig(seq_len=32, val_fraction=0.1, seed=5))
    for name, cfg in MODELS.items():
        cfg.save(root / f"{name}.json")
    return root


def _pretrain(out, packed, model, *extra, ranks=1, batch_size=GLOBAL_BATCH, max_steps=STEPS):
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--standalone"]
                if ranks > 1 else [sys.executable])
    return [*launcher, "-m", "lmforge", "pretrain", "--out", str(out), "--data-dir", str(packed / "data"),
            "--tokenizer", str(packed / "tok"), "--model-config", str(packed / f"{model}.json"),
            "--max-steps", str(max_steps), "--batch-size", str(batch_size), "--grad-accum", "2",
            "--checkpoint-every", "10", "--eval-every", "100", "--threads", "1", "--no-progress", "--device", "cpu",
            "--precision", "fp32", "--lr", "1e-2", "--set", "log_every=1", "--set", "sample_every=1000",
            "--set", "peak_tflops=1.0", "--set", "export_hf=false", "--set", "warmup_steps=1",
            "--set", "grad_clip=0.5", "--set", "keep_checkpoints=3", "--set", "eval_batches=2", *extra]


def _run(cmd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def _records(out, kind):
    return {r["step"]: r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == kind}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, packed):
    """run(model, layout) -> its run directory, each launched once per module ("single": one process)."""
    done = {}

    def run(model, layout):
        if (model, layout) not in done:
            out = tmp_path_factory.mktemp(f"{model}-{layout}") / "run"
            if layout == "single":
                _run(_pretrain(out, packed, model))
            else:
                flags, tp, pp = LAYOUTS[layout]
                dp = 4 // (tp * pp)
                _run(_pretrain(out, packed, model, "--parallel", "fsdp", *flags, ranks=4,
                               batch_size=GLOBAL_BATCH // dp))
            done[model, layout] = out
        return done[model, layout]

    return run


def _assert_same_run(got_dir, want_dir, steps):
    want, got = _records(want_dir, "train"), _records(got_dir, "train")
    for step in steps:
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-5), (step, got[step], want[step])
        # the gradient norm (before clipping) catches a factor that Adam's scale invariance would hide
        assert got[step]["grad_norm"] == pytest.approx(want[step]["grad_norm"], rel=1e-4), (step, got, want)


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("model", list(MODELS))
def test_layout_matches_the_single_process_run(runs, packed, model, layout):
    single, run = runs(model, "single"), runs(model, layout)
    assert sorted(_records(run, "train")) == list(range(1, STEPS + 1))
    _assert_same_run(run, single, range(1, STEPS + 1))
    want_val, got_val = _records(single, "val")[STEPS]["val_loss"], _records(run, "val")[STEPS]["val_loss"]
    assert got_val == pytest.approx(want_val, rel=1e-5)
    assert _records(single, "train")[STEPS]["loss"] < _records(single, "train")[1]["loss"]  # it trains
    # the parameter bytes a rank holds (the largest over ranks) are what `lmforge calc` gives for the layout
    _, tp, pp = LAYOUTS[layout]
    dp = 4 // (tp * pp)
    states = _records(run, "model_states")[1]
    assert (states["tp"], states["pp"], states["dp"], states["zero"]) == (tp, pp, dp, 3)
    calc = run_cli("calc", "--model-config", str(run / "model_config.json"), "--tp", str(tp), "--pp", str(pp),
                   "--dp", str(dp), "--zero-stage", "3", "--dtype", "fp32", "--json")
    assert calc.returncode == 0, calc.stderr
    predicted = json.loads(calc.stdout)["layout"]["model_states"]
    print(f"{model} {layout}: measured {states}, calc {predicted}")
    for key, name in (("param_bytes", "weights"), ("grad_bytes", "gradients"), ("optimizer_bytes", "optimizer")):
        assert states[key] == pytest.approx(predicted[name], rel=0.05), (key, states, predicted)
    ckpt = run / "checkpoints" / f"step-{STEPS:08d}"
    assert json.loads((ckpt / "manifest.json").read_text())["layout"] == "dcp"


@pytest.mark.slow
@pytest.mark.parametrize(("model", "saved", "resumed"), [("dense", "tp2-fsdp2", "pp2-dp2"),
                                                         ("moe", "tp2-pp2", "single")])
def test_checkpoint_saved_in_one_layout_resumes_in_another(runs, packed, tmp_path, model, saved, resumed):
    source = runs(model, saved)
    out = tmp_path / "resumed"
    shutil.copytree(source / "checkpoints" / "step-00000010", out / "checkpoints" / "step-00000010")
    kept = [line for line in (source / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= 10]
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
    if resumed == "single":
        done = _run([*_pretrain(out, packed, model), "--resume"])
    else:
        flags, tp, pp = LAYOUTS[resumed]
        dp = 4 // (tp * pp)
        done = _run([*_pretrain(out, packed, model, "--parallel", "fsdp", *flags, ranks=4,
                                batch_size=GLOBAL_BATCH // dp), "--resume"])
    assert "resumed from" in done.stdout and "step 10" in done.stdout, done.stdout[-2000:]
    _assert_same_run(out, runs(model, "single"), range(11, STEPS + 1))
