"""Our LoRA adapters against the `peft` library on transformers' Llama: same logits both ways (the key acceptance)."""

import json

import peft
import pytest
import torch
import transformers

from lmforge.formats.hf_dir import save_hf_model
from lmforge.model import Transformer, get_preset
from lmforge.peft import LoraConfig, apply_lora, load_adapter, lora_layers, save_adapter


def tiny_llama(tie: bool = False) -> Transformer:
    torch.manual_seed(0)
    return Transformer(get_preset("tiny-llama", vocab_size=256, tie_embeddings=tie)).eval()


def randomize_lora(model, scale: float = 0.1) -> None:
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.normal_(0, scale)  # B is zero at init: make the adapter change the outputs


def batch():
    ids = torch.randint(3, 256, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in row 1
    return ids, mask


def hf_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float()


def real(logits, mask):
    return logits[mask.bool()]  # padded positions differ by design (positions), compare real tokens only


@pytest.mark.parametrize("targets, tie", [(("q_proj", "k_proj", "v_proj", "o_proj"), False), (("all-linear",), True),
                                          (("layers.1.mlp.down_proj", "layers.0.attn.v_proj"), False)])
def test_our_adapter_applied_by_peft_gives_same_logits(tmp_path, targets, tie):
    model = tiny_llama(tie)
    save_hf_model(model, tmp_path / "base")
    cfg = LoraConfig(r=4, alpha=8, target_modules=targets)
    apply_lora(model, cfg)
    randomize_lora(model)
    save_adapter(model, cfg, tmp_path / "adapter", base_model_name=str(tmp_path / "base"))
    written = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert written["peft_type"] == "LORA" and written["task_type"] == "CAUSAL_LM" and written["r"] == 4

    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32).eval()
    ids, mask = batch()
    base_ref = hf_logits(hf, ids, mask)
    peft_model = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    ref = hf_logits(peft_model, ids, mask)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
    assert (real(ref, mask) - real(base_ref, mask)).abs().max() > 1e-3  # the adapter does change the outputs
    torch.testing.assert_close(real(ours, mask), real(ref, mask), atol=1e-5, rtol=1e-5)


def test_adapter_made_by_peft_loads_into_our_model(tmp_path):
    model = tiny_llama()
    save_hf_model(model, tmp_path / "base")
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32).eval()
    peft_cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"], lora_dropout=0.1,
                               task_type="CAUSAL_LM")
    peft_model = peft.get_peft_model(hf, peft_cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    peft_model.save_pretrained(str(tmp_path / "peft_adapter"))
    peft_model.eval()
    ids, mask = batch()
    ref = hf_logits(peft_model, ids, mask)

    cfg = load_adapter(model, tmp_path / "peft_adapter")
    assert cfg.r == 8 and cfg.alpha == 16 and cfg.dropout == pytest.approx(0.1)
    assert len(lora_layers(model)) == 3 * model.config.n_layers
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
    torch.testing.assert_close(real(ours, mask), real(ref, mask), atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_is_exact(tmp_path):
    model = tiny_llama()
    cfg = LoraConfig(r=2, alpha=4, target_modules=("all-linear",), use_rslora=True)
    apply_lora(model, cfg)
    randomize_lora(model)
    save_adapter(model, cfg, tmp_path / "a")
    fresh = tiny_llama()
    loaded = load_adapter(fresh, tmp_path / "a")
    assert loaded.use_rslora and loaded.r == 2
    ids, _ = batch()
    with torch.no_grad():
        assert torch.equal(model(ids), fresh(ids))
