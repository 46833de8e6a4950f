"""The Trainer: exact resume (in process), non-finite steps skipped and the abort after K in a row,
SIGTERM -> checkpoint and a clean return, and learning below the unigram-entropy baseline."""

import os
import signal

import pytest
import torch
from conftest import tiny_model_config, tiny_train_config

from lmforge.common.errors import LmforgeError
from lmforge.data.corpus import unigram_entropy
from lmforge.data.loader import PackedLoader
from lmforge.model import Transformer
from lmforge.train.corpus_data import split_tokens
from lmforge.train.metrics import read_metrics
from lmforge.train.trainer import Trainer


def _trainer(cfg, packed, model=None, **kw):
    data, _, tok = packed
    torch.manual_seed(cfg.seed)
    model = model or Transformer(tiny_model_config(len(tok)))
    train = PackedLoader(data, "train", cfg.batch.batch_size, seed=cfg.seed)
    val = PackedLoader(data, "val", cfg.batch.batch_size, shuffle=False)
    return Trainer(cfg, model, train, val, tokenizer=tok, log=lambda m: None, **kw)


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"}


def _sigterm_at_micro_batch(n):
    """An extra-losses hook (it runs inside every micro-batch) that sends SIGTERM at the n-th call."""
    calls = []

    def hook(model):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return torch.zeros(())

    return hook


def test_resume_is_bitwise_exact(tmp_path, packed):
    cfg_a, cfg_b = tiny_train_config(tmp_path / "a"), tiny_train_config(tmp_path / "b")
    _trainer(cfg_a, packed).fit()
    # Interrupted during step 5 (micro-batch 9 of 2 per step); the checkpoint holds steps 1..5.
    first = _trainer(cfg_b, packed, extra_losses=_sigterm_at_micro_batch(9)).fit()
    assert first["status"] == "interrupted" and first["step"] == 5
    # A fresh start: different RNG state, new model, new loaders; everything comes from the checkpoint.
    torch.manual_seed(1234)
    summary = _trainer(cfg_b.replace(resume=True), packed, model=Transformer(tiny_model_config(320))).fit()
    assert summary["step"] == 8
    full, resumed = _losses(tmp_path / "a" / "run"), _losses(tmp_path / "b" / "run")
    assert sorted(resumed) == list(range(1, 9))
    assert [full[s] for s in range(1, 9)] == [resumed[s] for s in range(1, 9)]  # bitwise equal floats


class _NaNAt(torch.nn.Module):
    """Wraps a model and returns NaN logits on the forward calls listed (counting from 0)."""

    def __init__(self, model, bad_calls):
        super().__init__()
        self.inner, self.bad, self.calls, self.config = model, set(bad_calls), 0, model.config
        self.layers = model.layers

    def forward(self, x, **kwargs):  # kwargs: the decode step's (kv_cache, last_only) when the trainer samples
        out = self.inner(x, **kwargs)
        bad = self.calls in self.bad and self.training
        self.calls += self.training
        return out * float("nan") if bad else out


def test_nonfinite_step_is_skipped(tmp_path, packed):
    cfg = tiny_train_config(tmp_path, grad_accum=1, max_steps=5)
    model = _NaNAt(Transformer(tiny_model_config(320)), bad_calls={2})  # the third step's forward
    trainer = _trainer(cfg, packed, model=model)
    snapshots = []
    original = trainer.optimizer.step

    def step_spy(*a, **k):
        snapshots.append(trainer.step)
        return original(*a, **k)

    trainer.optimizer.step = step_spy
    summary = trainer.fit()
    assert summary["nonfinite_steps"] == 1 and summary["status"] == "finished"
    assert snapshots == [0, 1, 3, 4]  # no update at step index 2
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["skipped"] for r in records] == [False, False, True, False, False]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_abort_after_k_nonfinite_in_a_row(tmp_path, packed):
    cfg = tiny_train_config(tmp_path, grad_accum=1, max_steps=20, max_nonfinite=3)
    model = _NaNAt(Transformer(tiny_model_config(320)), bad_calls=range(1, 100))
    trainer = _trainer(cfg, packed, model=model)
    with pytest.raises(LmforgeError, match="3 non-finite steps in a row"):
        trainer.fit()
    assert trainer.step == 4  # one good step, then three skipped


def test_sigterm_saves_a_checkpoint_and_returns(tmp_path, packed):
    cfg = tiny_train_config(tmp_path, max_steps=50, checkpoint_every=100)
    before = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL: e.g. ray.init in an earlier test installs one
    summary = _trainer(cfg, packed, extra_losses=_sigterm_at_micro_batch(5)).fit()
    assert summary["status"] == "interrupted" and summary["step"] == 3  # signal in step 3's first micro-batch
    assert (tmp_path / "run" / "checkpoints" / "step-00000003" / "manifest.json").is_file()
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back


@pytest.mark.slow
def test_training_beats_the_unigram_baseline(tmp_path, packed):
    data, _, tok = packed
    baseline = unigram_entropy(split_tokens(data, "train"), len(tok))
    cfg = tiny_train_config(tmp_path, batch_size=16, grad_accum=1, max_steps=80, lr=2e-2, warmup_steps=5,
                            eval_every=80, eval_batches=4, checkpoint_every=1000)
    model = Transformer(tiny_model_config(len(tok)).replace(dim=64, ffn_dim=128))
    summary = _trainer(cfg, packed, model=model).fit()
    first = read_metrics(tmp_path / "run" / "metrics.jsonl")[0]["loss"]
    assert first > baseline  # a random model starts above it (about ln V)
    assert summary["val_loss"] < baseline - 0.3, (summary["val_loss"], baseline)


def test_fresh_start_over_existing_checkpoints_is_refused(tmp_path, packed):
    cfg = tiny_train_config(tmp_path, max_steps=2, eval_every=100)
    _trainer(cfg, packed).fit()
    with pytest.raises(LmforgeError, match="--resume"):
        _trainer(cfg, packed).fit()


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_is_warned(tmp_path, packed, monkeypatch, native):
    from lmforge.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: native)
    data, _, tok = packed
    lines = []
    Trainer(tiny_train_config(tmp_path, precision="bf16"), Transformer(tiny_model_config(len(tok))),
            PackedLoader(data, "train", 4), tokenizer=tok, log=lines.append)
    assert any("no native bf16" in line for line in lines) is not native
