"""`sft` with LoRA and over a quantized base (QLoRA-style): only the low-rank updates train, the PEFT adapter
applied to the untouched base reproduces the merged export, and the loss on the assistant tokens goes down."""

import json

import pytest
import torch

from lmforge.formats.loader import LM, load
from lmforge.model import Transformer, get_preset
from lmforge.peft.peft_io import load_adapter
from lmforge.tokenizer import train_tokenizer
from lmforge.train.post.sft import sft
from lmforge.train.post.sft_config import SFTConfig


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft_lora")
    convs = [[{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]
             for w in ("red", "blue", "green", "pink", "gold") * 8]
    data = root / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    tok = train_tokenizer([m["content"] for c in convs for m in c] * 5, type="byte-bpe", vocab_size=300)
    torch.manual_seed(0)
    LM(Transformer(get_preset("tiny-llama", vocab_size=len(tok), max_seq_len=64)), tok, "tiny").save(root / "base")
    return root, data


def _run(root, data, name, **lora):
    cfg = SFTConfig.from_dict(dict(model=str(root / "base"), data=(str(data),), out=str(root / name), max_steps=15,
                                   batch_size=4, seq_len=32, pack=False, lr=1e-2, warmup_steps=1, eval_examples=5,
                                   max_new_tokens=4, log_every=1, eval_every=15, threads=1, device="cpu",
                                   precision="fp32", progress=False, **lora))
    summary = sft(cfg, log=lambda message: None)
    losses = [r["loss"] for r in map(json.loads, (root / name / "metrics.jsonl").read_text().splitlines())
              if r.get("kind") == "train"]
    return summary, losses


def test_lora_sft_adapter_on_the_base_equals_the_merged_export(base):
    root, data = base
    summary, losses = _run(root, data, "lora", lora_r=4, lora_alpha=8.0, lora_targets=("all-linear",))
    assert losses[-1] < losses[0] - 0.5
    merged = load(str(root / "lora" / "hf")).model.eval()
    plain = load(str(root / "base")).model.eval()
    ids = torch.randint(0, merged.config.vocab_size, (2, 12))
    assert not torch.allclose(merged(ids), plain(ids), atol=1e-4)  # the export is the fine-tuned model
    config = load_adapter(plain, summary["adapter"])  # base + PEFT adapter == merged export
    assert config.r == 4
    torch.testing.assert_close(plain(ids), merged(ids), atol=1e-5, rtol=1e-5)
    base_weights = load(str(root / "base")).model.state_dict()
    unmerged = {k: v for k, v in plain.state_dict().items() if "lora_" not in k}
    for name, tensor in base_weights.items():  # training never touched a base weight
        torch.testing.assert_close(unmerged[name.replace(".weight", ".base.weight")]
                                   if name.replace(".weight", ".base.weight") in unmerged else unmerged[name], tensor)


def test_qlora_sft_over_an_int8_base_writes_the_adapter(base):
    root, data = base
    summary, losses = _run(root, data, "qlora", lora_r=4, base_bits=8)
    assert losses[-1] < losses[0] - 0.5
    assert "hf" not in summary and (root / "qlora" / "adapter" / "adapter_model.safetensors").is_file()


def test_base_bits_without_lora_is_refused():
    with pytest.raises(Exception, match="lora_r"):
        SFTConfig.from_dict({"model": "x", "base_bits": 4})
