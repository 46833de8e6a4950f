"""Distillation: the loss against hand-computed KL / CE values (forward, reverse, temperature, alpha mix), and a
student distilled from a briefly trained teacher ends far closer to it (held-out KL) than an untrained one."""

import math

import pytest
import torch
from conftest import tiny_model_config, tiny_train_config

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.data.loader import PackedLoader
from lmforge.formats.hf_dir import save_hf_model
from lmforge.model import Transformer
from lmforge.tokenizer import train_tokenizer
from lmforge.train.distill import DistillConfig, distill_loss_sum, token_kl
from lmforge.train.distill_run import distill
from lmforge.train.trainer import Trainer

P, Q = [0.7, 0.2, 0.1], [0.4, 0.4, 0.2]  # teacher, student


def _soft(p, t):
    w = [x ** (1 / t) for x in p]
    return [x / sum(w) for x in w]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


@pytest.mark.parametrize("t", [1.0, 2.0, 0.5])
def test_kl_closed_form(t):
    s, te = torch.tensor(Q).log(), torch.tensor(P).log()
    assert float(token_kl(s, te, t, "forward")) == pytest.approx(_kl(_soft(P, t), _soft(Q, t)), rel=1e-5)
    assert float(token_kl(s, te, t, "reverse")) == pytest.approx(_kl(_soft(Q, t), _soft(P, t)), rel=1e-5)


def test_loss_mixes_scaled_kl_and_ce():
    s, te = torch.tensor([Q, Q]).log()[None], torch.tensor([P, P]).log()[None]  # [1, 2, 3]
    labels = torch.tensor([[0, -100]])  # the second position is ignored
    cfg = DistillConfig(temperature=2.0, kind="reverse", alpha=0.25)
    expected = 0.25 * 4 * _kl(_soft(Q, 2), _soft(P, 2)) + 0.75 * -math.log(Q[0])
    assert float(distill_loss_sum(s, te, labels, cfg)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="kind"):
        DistillConfig(kind="js")


def _teacher(tmp_path, packed, train=True):
    data, tok_dir, tok = packed
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(len(tok)))
    cfg = tiny_train_config(tmp_path / "teacher", max_steps=60, grad_accum=1, batch_size=8, checkpoint_every=60,
                            eval_every=60)
    if train:
        Trainer(cfg, model, PackedLoader(data, "train", 8), None, log=lambda m: None).fit()
    save_hf_model(model, tmp_path / "teacher_hf")
    tok.save(tmp_path / "teacher_hf")
    return tmp_path / "teacher_hf"


@pytest.mark.slow
def test_student_approaches_teacher(tmp_path, packed):
    data, tok_dir, tok = packed
    teacher = _teacher(tmp_path, packed)
    tiny_model_config(len(tok)).replace(dim=16, ffn_dim=32, n_heads=2, n_kv_heads=1).save(tmp_path / "student.json")
    cfg = tiny_train_config(tmp_path / "s", max_steps=80, grad_accum=1, batch_size=8, checkpoint_every=80,
                            eval_every=80, eval_batches=4, data_dir=str(data), tokenizer_dir=str(tok_dir), threads=1,
                            model_config=str(tmp_path / "student.json"), lr=1e-2)
    s = distill(cfg, str(teacher), DistillConfig(temperature=1.0, alpha=1.0), log=lambda m: None)
    print(f"held-out KL(teacher || student): untrained {s['kl_before']:.4f}, distilled {s['kl_after']:.4f}")
    assert s["kl_after"] < 0.35 * s["kl_before"]


def test_vocab_mismatch_is_refused(tmp_path, packed):
    data, _, _ = packed
    teacher = _teacher(tmp_path, packed, train=False)
    other = train_tokenizer(["a different corpus, quite short " * 20], type="byte-bpe", vocab_size=300)
    other.save(tmp_path / "other_tok")
    cfg = tiny_train_config(tmp_path / "s", data_dir=str(data), tokenizer_dir=str(tmp_path / "other_tok"))
    with pytest.raises(LmforgeError, match="tokenizer"):
        distill(cfg, str(teacher), DistillConfig(), log=lambda m: None)
