"""`lmforge lora merge`: the merged directory gives base+adapter logits, in lmforge and in transformers."""

import torch
from typer.testing import CliRunner

import lmforge
from lmforge.cli.main import app
from lmforge.common.errors import LmforgeError
from lmforge.peft import LoraConfig, apply_lora, lora_layers, save_adapter
from tests.tiny_lm import tiny_lm

runner = CliRunner()


def test_merge_writes_a_model_with_the_adapted_logits(tmp_path):
    lm = tiny_lm()
    lm.save(tmp_path / "base")
    cfg = LoraConfig(r=4, alpha=4, target_modules=("all-linear",))
    apply_lora(lm.model, cfg)
    with torch.no_grad():
        for _, layer in lora_layers(lm.model):
            layer.lora_B.normal_(0, 0.1)
    save_adapter(lm.model, cfg, tmp_path / "adapter", base_model_name=str(tmp_path / "base"))

    result = runner.invoke(app, ["lora", "merge", str(tmp_path / "base"), str(tmp_path / "adapter"),
                                 "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert "merged" in result.output
    ids = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        adapted = lm.model(ids)
        base = lmforge.load(tmp_path / "base").model(ids)
        merged = lmforge.load(tmp_path / "merged")
        assert merged.tokenizer is not None
        ours = merged.model(ids)
    assert (adapted - base).abs().max() > 1e-2
    torch.testing.assert_close(ours, adapted, atol=1e-5, rtol=1e-5)

    import transformers
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(ref, adapted, atol=1e-5, rtol=1e-5)


def test_merge_user_errors(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("occupied")
    result = runner.invoke(app, ["lora", "merge", "smollm2-135m", str(tmp_path), "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, LmforgeError) and "not an empty directory" in str(result.exception)
    result = runner.invoke(app, ["lora", "merge", "smollm2-135m", str(tmp_path), "--out", str(tmp_path / "o2")])
    assert isinstance(result.exception, LmforgeError) and "adapter_config.json is missing" in str(result.exception)
