"""bf16 training with fp32 master weights: a step is the fp32 AdamW step of the bf16 gradient (bitwise equal to
an fp32 reference where the gradient is exact), gradients accumulate in fp32, a real model's gradients stay close to
fp32's, the fp32 weights come back after training, and `lmforge pretrain --precision bf16` resumes the masters
bit for bit."""

import shutil

import pytest
import torch
from conftest import tiny_model_config, tiny_train_config
from safetensors.torch import load_file
from torch import nn

from lmforge.data.loader import PackedLoader
from lmforge.model import Transformer
from lmforge.train.master_weights import MasterWeights
from lmforge.train.optim import build_optimizer
from lmforge.train.precision import uses_master_weights
from lmforge.train.step import accumulate_gradients, optimizer_step
from lmforge.train.trainer import Trainer
from tests.cli_util import run_cli

OPT = dict(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)


def _linear_pair():
    """Two copies of a 6 -> 5 linear map with fp32 weights that bf16 cannot hold, and inputs (small integers)
    whose loss sum(c * (x @ W.T)) has the gradient c.T @ x exactly, in bf16 as in fp32."""
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(6, 5, bias=False))
    ref[0].weight.data += 1e-4  # off the bf16 grid
    model = nn.Sequential(nn.Linear(6, 5, bias=False))
    model.load_state_dict(ref.state_dict())
    x = torch.randint(-3, 4, (4, 6)).float()
    c = torch.randint(-3, 4, (4, 5)).float()
    return ref, model, x, c


def _step(model, opt, x, c):
    loss = (model(x.to(model[0].weight.dtype)).float() * c).sum()
    loss.backward()
    return optimizer_step(model, opt, float(loss.detach()), 1, grad_clip=0.0)


def test_master_step_equals_the_fp32_reference_step_bitwise_when_the_gradient_is_exact():
    ref, model, x, c = _linear_pair()
    w0 = ref[0].weight.detach().clone()
    masters = MasterWeights(model)
    assert model[0].weight.dtype == torch.bfloat16
    assert torch.equal(masters.masters[0], w0)  # the master is the fp32 original, not its bf16 rounding
    ref_opt, opt = build_optimizer(ref, **OPT), build_optimizer(model, **OPT, masters=masters)
    for _ in range(3):
        _step(ref, ref_opt, x, c)
        _step(model, opt, x, c)
        assert torch.equal(masters.masters[0], ref[0].weight)
        assert torch.equal(model[0].weight, ref[0].weight.to(torch.bfloat16))  # the bf16 weight: the rounded master
    g = c.T @ x  # the closed form of one step from zero moments: w (1 - lr wd) - lr g / (|g| + eps)
    first = w0 * (1 - OPT["lr"] * OPT["weight_decay"]) - OPT["lr"] * g / (g.abs() + OPT["eps"])
    ref2, model2, _, _ = _linear_pair()
    masters2 = MasterWeights(model2)
    _step(model2, build_optimizer(model2, **OPT, masters=masters2), x, c)
    torch.testing.assert_close(masters2.masters[0], first, rtol=1e-6, atol=1e-7)


def test_gradients_accumulate_in_fp32_on_the_masters():
    _, model, x, c = _linear_pair()
    masters = MasterWeights(model)
    for part in (x[:2], x[2:]):
        loss = (model(part.bfloat16()).float() * c[:2]).sum()
        loss.backward()
        assert model[0].weight.grad is None  # moved into the master's fp32 .grad as soon as it was made
    assert masters.masters[0].grad.dtype == torch.float32
    assert torch.equal(masters.masters[0].grad, c[:2].T @ x[:2] + c[:2].T @ x[2:])


def test_a_transformer_step_through_masters_is_close_to_fp32():
    torch.manual_seed(0)
    ref = Transformer(tiny_model_config(96))
    model = Transformer(tiny_model_config(96))
    model.load_state_dict(ref.state_dict())
    masters = MasterWeights(model)
    x, y = torch.randint(0, 96, (3, 20)), torch.randint(0, 96, (3, 20))
    loss_ref, _ = accumulate_gradients(ref, [(x, y)])
    loss, _ = accumulate_gradients(model, [(x, y)])
    assert abs(loss - loss_ref) < 0.02
    ref_grads = {name: p.grad for name, p in ref.named_parameters()}
    names = {id(p): name for name, p in model.named_parameters()}
    assert len(masters.masters) == len(ref_grads)
    for p, master in zip(masters.params, masters.masters, strict=True):
        got, want = master.grad.flatten(), ref_grads[names[id(p)]].flatten()
        assert torch.nn.functional.cosine_similarity(got, want, dim=0) > 0.99, names[id(p)]


def test_restore_gives_the_model_its_fp32_weights_and_the_optimizer_its_parameters():
    ref, model, x, c = _linear_pair()
    masters = MasterWeights(model)
    opt = build_optimizer(model, **OPT, masters=masters)
    _step(model, opt, x, c)
    stepped = masters.masters[0].detach().clone()
    masters.restore(opt)
    assert model[0].weight.dtype == torch.float32 and torch.equal(model[0].weight, stepped)
    assert opt.param_groups[0]["params"][0] is model[0].weight and model[0].weight in opt.state
    _step(model, opt, x, c)  # plain fp32 training goes on: the gradient stays on the weight, the step moves it
    assert not torch.equal(model[0].weight, stepped)


def test_the_trainer_trains_bf16_through_masters_and_hands_back_fp32_weights(tmp_path, packed):
    data, _, tok = packed
    loader = PackedLoader(data, "train", batch_size=4, seed=0)
    model = Transformer(tiny_model_config(len(tok)))
    trainer = Trainer(tiny_train_config(tmp_path, precision="bf16", max_steps=2, eval_every=100), model, loader)
    assert trainer.masters is not None and model.lm_head.weight.dtype == torch.bfloat16
    assert trainer.fit()["status"] == "finished"
    saved = load_file(trainer.last_checkpoint / "model.safetensors")
    weights = model.state_dict()
    assert all(weights[k].dtype == torch.float32 and torch.equal(weights[k], v) for k, v in saved.items())
    frozen = Transformer(tiny_model_config(len(tok)))
    frozen.embed.weight.requires_grad_(False)  # a frozen base (PEFT): autocast over fp32 weights
    assert not uses_master_weights("bf16", False, frozen) and uses_master_weights("bf16", False, model)
    assert not uses_master_weights("bf16", True, model) and not uses_master_weights("fp32", False, model)


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, packed):
    data, tok, _ = packed
    out = tmp_path_factory.mktemp("bf16") / "run"
    args = ["pretrain", "--out", str(out), "--data-dir", str(data), "--tokenizer", str(tok), "--preset",
            "tiny-llama", "--max-steps", "4", "--batch-size", "4", "--grad-accum", "2", "--checkpoint-every", "2",
            "--eval-every", "4", "--threads", "1", "--no-progress", "--device", "cpu", "--precision", "bf16",
            "--set", "sample_every=1000", "--set", "peak_tflops=1.0", "--set", "export_hf=false",
            "--set", "keep_checkpoints=3", "--set", "log_every=1"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return out, args


def test_bf16_checkpoints_hold_the_fp32_masters_and_resume_restores_them_bitwise(bf16_run, tmp_path):
    out, args = bf16_run
    want = load_file(out / "checkpoints" / "step-00000004" / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in want.values())
    assert any(not torch.equal(t, t.bfloat16().float()) for t in want.values())  # masters, not bf16 roundings
    resumed = tmp_path / "run"
    shutil.copytree(out, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000004")
    result = run_cli(*[str(resumed) if a == str(out) else a for a in args], "--resume")
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stdout and "step 2" in result.stdout
    step4 = resumed / "checkpoints" / "step-00000004"
    got = load_file(step4 / "model.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    want_opt = load_file(out / "checkpoints" / "step-00000004" / "optimizer.safetensors")
    got_opt = load_file(step4 / "optimizer.safetensors")
    assert all(torch.equal(want_opt[k], got_opt[k]) for k in want_opt)
