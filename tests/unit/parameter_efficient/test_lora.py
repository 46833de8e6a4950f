"""LoRA on lmforge models: config validation, identity at init, frozen base, merge/unmerge, QLoRA over int8/int4."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import ConfigError, LmforgeError
from lmforge.model import Transformer, get_preset
from lmforge.peft import (
    LoraConfig,
    apply_lora,
    lora_disabled,
    lora_layers,
    lora_state_dict,
    merge_lora,
    unload_lora,
    unmerge_lora,
)
from lmforge.peft.qlora import frozen_quantized_linear
from lmforge.quant.int_linear import quantize_model


def tiny(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(get_preset("tiny-llama", vocab_size=256)).eval()


def ids(n: int = 2, t: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, t))


def lm_loss(model, x):
    logits = model(x[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))


@pytest.mark.parametrize("kwargs, field", [({"r": 0}, "r"), ({"alpha": -1}, "alpha"), ({"dropout": 1.0}, "dropout"),
                                           ({"target_modules": ()}, "target_modules")])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"LoraConfig.{field}"):
        LoraConfig(**kwargs)


def test_unknown_target_names_the_available_modules():
    with pytest.raises(ConfigError, match="'query'.*available: down_proj, gate_proj, k_proj, lm_head, o_proj"):
        apply_lora(tiny(), LoraConfig(target_modules=("query",)))


def test_identity_at_init_base_frozen_and_only_lora_trains():
    model, ref = tiny(), tiny()
    x = ids()
    apply_lora(model, LoraConfig(r=4, target_modules=("all-linear",)))
    assert len(lora_layers(model)) == 7 * model.config.n_layers  # q k v o gate up down, not lm_head
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))  # B = 0: the adapter starts as the identity
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora" not in k}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(15):
        loss = lm_loss(model, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # base weights untouched


def test_scaling_and_rslora_against_the_formula():
    model = tiny()
    apply_lora(model, LoraConfig(r=4, alpha=8, target_modules=("layers.0.attn.q_proj",), use_rslora=True))
    (_, layer), = lora_layers(model)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 64)
    expected = x @ layer.base.weight.T + (8 / 2) * (x @ layer.lora_A.T @ layer.lora_B.T)  # alpha / sqrt(r)
    torch.testing.assert_close(layer(x), expected)


def test_merge_unmerge_and_disable():
    model, ref = tiny(), tiny()
    apply_lora(model, LoraConfig(r=4, target_modules=("q_proj", "v_proj", "down_proj")))
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.normal_(0, 0.2)
    x = ids()
    with torch.no_grad():
        adapted, base = model(x), ref(x)
        assert (adapted - base).abs().max() > 1e-2
        with lora_disabled(model):
            torch.testing.assert_close(model(x), base)
        merge_lora(model)
        torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=1e-5)
        with pytest.raises(LmforgeError, match="unmerge"), lora_disabled(model):
            pass
        unmerge_lora(model)
        torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=1e-5)
        state = lora_state_dict(model)
        assert set(state) == {f"{n}.{ab}" for n, _ in lora_layers(model) for ab in ("lora_A", "lora_B")}
        unload_lora(model, merge=True)
        assert not lora_layers(model) and type(model.layers[0].attn.q_proj) is nn.Linear
        torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=1e-5)
        assert set(model.state_dict()) == set(ref.state_dict())  # plain names again: save_hf_model works


@pytest.mark.parametrize("bits", [8, 4])
def test_qlora_gradient_through_the_frozen_quantized_base(bits):
    torch.manual_seed(0)
    quantized = quantize_model(nn.Sequential(nn.Linear(64, 32)), bits=bits, group_size=32)[0]
    x = torch.randn(5, 64, requires_grad=True)
    c = torch.randn(5, 32)  # a linear objective: its gradient does not depend on the bf16 forward's rounding
    (frozen_quantized_linear(quantized, x) * c).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    (x_ref @ quantized.dequantize().T * c).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


@pytest.mark.parametrize("bits", [8, 4])
def test_qlora_trains_over_an_int_base_and_refuses_an_inexact_merge(bits):
    model = quantize_model(tiny(), bits=bits, group_size=32)
    apply_lora(model, LoraConfig(r=4, target_modules=("all-linear",)))
    x = ids()
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora" not in k}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        loss = lm_loss(model, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    assert all(lay.lora_A.grad is not None for _, lay in lora_layers(model) if "layers.0." in _)  # reached layer 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(LmforgeError, match="quantized base"):
        merge_lora(model)
    with torch.no_grad():
        adapted = model(x)
        unload_lora(model, merge=True)  # float layers holding dequantize(W) + B A
        assert type(model.layers[0].attn.q_proj) is nn.Linear
        torch.testing.assert_close(model(x), adapted, atol=0.05, rtol=0.05)  # bf16 kernel vs fp32 dequantized
