"""GGUF both ways for every architecture lmforge and transformers' GGUF loader both read beyond llama/qwen2/qwen3:
Mistral (written as llama.cpp's `llama`), Gemma 3 (`gemma3`), Qwen3-MoE (`qwen3moe`) and BLOOM (`bloom`).
A random-weight transformers model -> lmforge export -> transformers' own GGUF loader (the independent reference)
and lmforge's import give the same logits, and the original model's within the storage type's error.
"""

import re

import gguf
import pytest
import torch
import transformers

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_export import write_gguf
from lmforge.formats.gguf_file import GGUFFile
from lmforge.formats.loader import load
from tests.cli_util import run_cli
from tests.tiny_lm import tiny_tokenizer

TEXT = "hello world, the cat sat on the mat. 東京 and 你好，世界！"
DIMS = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=128)  # fmt: skip
# transformers reads no query_pre_attn_scalar, sliding pattern or local RoPE base from a GGUF (its defaults: 256,
# 6, 10000, which are llama.cpp's for head_dim 256); nor moe_intermediate_size (its default 768).
ARCHS = {
    "mistral": ("Mistral", dict(sliding_window=None, tie_word_embeddings=False), "llama"),
    "gemma3": ("Gemma3Text", dict(num_attention_heads=2, num_key_value_heads=1, head_dim=256,
                                  query_pre_attn_scalar=256, sliding_window=64), "gemma3"),
    "qwen3_moe": ("Qwen3Moe", dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=768,
                                   norm_topk_prob=True, head_dim=32), "qwen3moe"),
    "bloom": ("Bloom", dict(), "bloom"),  # LayerNorm, ALiBi, fused QKV stored GPT-style by llama.cpp
}
TOLERANCE = {"f32": 1e-4, "q8_0": 0.05, "q4_k": 0.3}  # of the largest |logit|, against the original model


def hf_model(arch: str, **overrides):
    prefix, extra, _ = ARCHS[arch]
    cls = "Gemma3" if arch == "gemma3" else prefix
    config = getattr(transformers, f"{prefix}Config")(**(DIMS | extra | overrides))
    torch.manual_seed(0)
    model = getattr(transformers, f"{cls}ForCausalLM")(config).eval()
    with torch.no_grad():  # norms are constant at init: randomise them so a missed norm shift shows
        for param in model.parameters():
            if param.ndim == 1:
                param.copy_(torch.randn_like(param) * 0.5)
    return model


def logits(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    return (out.logits if hasattr(out, "logits") else out).float()


# Q4_K needs rows of 256 inputs: Mistral's and BLOOM's tiny rows are 64 / 128 / 256 wide only in part
QUANTIZED = {"mistral": "q8_0", "gemma3": "q4_k", "qwen3_moe": "q4_k", "bloom": "q8_0"}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_export_reads_back_in_transformers_and_lmforge(tmp_path, arch):
    reference = hf_model(arch)
    reference.save_pretrained(tmp_path / arch)
    tiny_tokenizer().save(tmp_path / arch)
    lm, ids = load(tmp_path / arch), tiny_tokenizer().encode(TEXT)
    exact = logits(reference, ids)
    for qtype in ("f32", QUANTIZED[arch]):
        out = tmp_path / f"{qtype}.gguf"
        # general.name exactly "mistral" would make transformers look for a gguf-py "mistral" tensor map and fail
        counts = write_gguf(lm.model, lm.tokenizer, out, qtype, name=arch)
        assert GGUFFile(out).fields["general.architecture"] == ARCHS[arch][2]
        assert counts.get(qtype.upper(), 0) > 0 and (qtype == "f32" or counts.get("F32", 0) > 0), counts
        theirs = logits(transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name,
                                                                          dtype=torch.float32).eval(), ids)
        back = load(out)
        assert back.config.family == ("llama" if arch == "mistral" else arch)
        ours = logits(back.model, ids)
        assert (ours - theirs).abs().max() < 1e-4  # the same dequantized weights, the same graph
        error = (ours - exact).abs().max().item()
        assert error < TOLERANCE[qtype] * exact.abs().max()
        assert qtype == "f32" or error > 1e-5  # the quantized file really is quantized
        assert back.tokenizer.encode(TEXT) == ids


def test_cli_exports_gemma3_q4_k(tmp_path):
    hf_model("gemma3").save_pretrained(tmp_path / "gemma3")
    tiny_tokenizer().save(tmp_path / "gemma3")
    out = tmp_path / "g.gguf"
    result = run_cli("convert", str(tmp_path / "gemma3"), "--to", "gguf", "--type", "q4_k", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "gemma3" in result.stdout and "Q4_K" in result.stdout
    assert GGUFFile(out).fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_K_S


@pytest.mark.parametrize(("arch", "change", "message"), [
    ("gemma3", dict(query_pre_attn_scalar=64), "query_pre_attn_scalar"),
    ("gemma3", dict(final_logit_softcapping=30.0), "final_logit_softcap"),
    ("mistral", dict(sliding_window=16), "sliding_window=16 < max_seq_len=128"),
    ("qwen3_moe", dict(norm_topk_prob=False), "norm_topk_prob=False"),
    ("qwen3_moe", dict(mlp_only_layers=[0]), "mlp_only_layers=[0]"),
])  # fmt: skip
def test_export_refuses_what_llama_cpp_would_run_differently(tmp_path, arch, change, message):
    hf_model(arch, **change).save_pretrained(tmp_path)
    with pytest.raises(LmforgeError, match=re.escape(message)):
        write_gguf(load(tmp_path).model, None, tmp_path / "x.gguf", "f32")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*partial*"))
