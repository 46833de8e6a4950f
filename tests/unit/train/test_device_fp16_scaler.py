"""fp16 training's loss scaler, on the CPU (torch.amp.GradScaler("cpu")): an overflow skips the update and is logged
(a line, loss_scale / scaler_skipped in the train record, the summary's count), the scaler's state is checkpointed so
a resumed run repeats the uninterrupted one exactly, and sharded gradients are refused."""

import pytest
import torch
from conftest import tiny_model_config, tiny_train_config

from lmforge.common.errors import LmforgeError
from lmforge.data.loader import PackedLoader
from lmforge.model import Transformer
from lmforge.train.metrics import read_metrics
from lmforge.train.precision import grad_scaler
from lmforge.train.trainer import Trainer

HUGE_SCALE = 2.0**22  # fp16 gradients times this overflow: the first steps are skipped until the scale comes down


def _fp16_trainer(cfg, packed, lines):
    data, _, tok = packed
    torch.manual_seed(cfg.seed)
    train = PackedLoader(data, "train", cfg.batch.batch_size, seed=cfg.seed)
    trainer = Trainer(cfg, Transformer(tiny_model_config(len(tok))), train, None, log=lines.append)
    assert isinstance(trainer.scaler, torch.amp.GradScaler) and trainer.scaler.is_enabled()
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=HUGE_SCALE)  # restored from the checkpoint on resume
    return trainer


def _records(run_dir):
    return {r["step"]: (r["loss"], r["loss_scale"], r["skipped"]) for r in read_metrics(run_dir / "metrics.jsonl")
            if r["kind"] == "train"}


def test_fp16_overflow_skips_are_logged_and_resume_restores_the_scaler(tmp_path, packed):
    config = dict(precision="fp16", max_steps=6, checkpoint_every=3, eval_every=100, grad_accum=1)
    lines: list[str] = []
    full = _fp16_trainer(tiny_train_config(tmp_path / "a", **config), packed, lines).fit()
    skipped = full["scaler_skipped_steps"]
    assert 1 <= skipped < 6 and full["nonfinite_steps"] == 0  # overflows are the scaler's, not faults
    assert sum("fp16 gradients overflowed" in line for line in lines) == skipped
    assert any(line.startswith("warning: precision fp16 on the CPU") for line in lines)
    a = _records(tmp_path / "a" / "run")
    scales = [a[s][1] for s in sorted(a)]
    assert scales[0] < HUGE_SCALE and scales == sorted(scales, reverse=True)  # halved at each overflow
    assert all(torch.isfinite(torch.tensor(a[s][0])) for s in a)

    # the same run stopped after step 3 and resumed: the checkpoint carries the lowered scale
    _fp16_trainer(tiny_train_config(tmp_path / "b", **{**config, "max_steps": 3}), packed, []).fit()
    resumed = _fp16_trainer(tiny_train_config(tmp_path / "b", **config, resume=True), packed, []).fit()
    assert resumed["scaler_skipped_steps"] == skipped
    assert _records(tmp_path / "b" / "run") == a  # losses and scales, step by step, bitwise


@pytest.mark.parametrize("layout", ["fsdp", "layered"])
def test_fp16_refuses_sharded_gradients(layout):
    with pytest.raises(LmforgeError, match="use precision='bf16'"):
        grad_scaler("fp16", torch.device("cpu"), layout)
    assert grad_scaler("bf16", torch.device("cpu"), layout) is None
    assert grad_scaler("fp16", torch.device("cpu"), "ddp") is not None
