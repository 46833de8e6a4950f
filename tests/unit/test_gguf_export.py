"""GGUF export (`lmforge convert --to gguf`): files written from random-weight transformers models, read back by
transformers' own GGUF loader (the independent reference) and by lmforge's GGUF import."""

import pytest
import torch
import transformers

from lmforge.formats.gguf_export import write_gguf
from lmforge.formats.gguf_file import GGUFFile
from lmforge.formats.loader import load
from tests.cli_util import assert_user_error, run_cli
from tests.tiny_lm import tiny_tokenizer
from tests.unit.test_gguf_import import tiny_model

SENTENCES = ["hello world, the cat sat on the mat.", "東京 and 你好，世界！", "emoji 🙂🎉 too", "café naïve\n\tEND"]
# qwen3 keeps transformers' default head_dim 128: its GGUF loader ignores qwen3.attention.key_length (see below)
ARCHS = {"llama": dict(tied=False), "qwen2": dict(tied=True), "qwen3": dict(tied=True)}


def hf_dir(tmp_path, arch):
    """A random-weight transformers model (vocab 320) with the tiny byte-level BPE tokenizer (300 tokens)."""
    model = tiny_model(arch, vocab_size=320, **ARCHS[arch])
    model.save_pretrained(tmp_path / "hf")
    tiny_tokenizer().save(tmp_path / "hf")
    return model


def logits(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    return (out.logits if hasattr(out, "logits") else out).float()


def hf_gguf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_cli_f32_export_matches_transformers_and_lmforge_import(tmp_path, arch):
    reference = hf_dir(tmp_path, arch)
    out = tmp_path / "model.gguf"
    result = run_cli("convert", str(tmp_path / "hf"), "--to", "gguf", "--type", "f32", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: {arch}" in result.stdout
    ids = tiny_tokenizer().encode(SENTENCES[0] + SENTENCES[1])
    want = logits(reference, ids)
    assert (logits(hf_gguf(out).eval(), ids) - want).abs().max() < 1e-4
    back = load(out)
    assert (logits(back.model, ids) - want).abs().max() < 1e-4
    for text in SENTENCES:  # the tokenizer round-trips: same ids as the source tokenizer
        assert back.tokenizer.encode(text) == tiny_tokenizer().encode(text)
        assert back.tokenizer.decode(back.tokenizer.encode(text)) == text
    assert back.tokenizer.chat_template == tiny_tokenizer().chat_template
    fields = GGUFFile(out).fields
    assert fields["general.architecture"] == arch and fields["tokenizer.ggml.model"] == "gpt2"
    assert len(fields["tokenizer.ggml.tokens"]) == 320  # padded to the model's vocabulary


@pytest.mark.parametrize("qtype", ["f16", "q8_0", "q4_0"])
def test_quantized_export_reads_back_equal_in_transformers_and_lmforge(tmp_path, qtype):
    hf_dir(tmp_path, "llama")
    lm = load(tmp_path / "hf")
    out = tmp_path / f"{qtype}.gguf"
    counts = write_gguf(lm.model, lm.tokenizer, out, qtype)
    assert counts[qtype.upper()] == 2 * 7 + 2  # every projection, embedding and output; norms stay F32
    ids = lm.tokenizer.encode(SENTENCES[0] + SENTENCES[2])
    ours, theirs, exact = logits(load(out).model, ids), logits(hf_gguf(out), ids), logits(lm.model, ids)
    assert (ours - theirs).abs().max() < 1e-4  # the same dequantized weights on both sides
    error = (ours - exact).abs().max().item()
    assert 0 < error < {"f16": 1e-2, "q8_0": 0.1, "q4_0": 1.0}[qtype] * exact.abs().max()
    assert transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name).encode(SENTENCES[1]) == \
        lm.tokenizer.encode(SENTENCES[1])


def test_convert_gguf_user_errors(tmp_path):
    assert_user_error(run_cli("convert", "smollm2-135m", "--to", "gguf", "--type", "q3_x", "--out",
                              str(tmp_path / "x.gguf")), "q3_x", "q8_0")
    assert_user_error(run_cli("convert", "smollm2-135m", "--to", "ggml", "--out", str(tmp_path / "x")), "ggml", "gguf")
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2)
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    result = run_cli("convert", str(tmp_path / "bert"), "--to", "gguf", "--out", str(tmp_path / "m.gguf"))
    assert_user_error(result, "'bert'", "llama, mistral, qwen2, qwen3, qwen3_moe, gemma3")
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*partial*"))


def test_qwen3_head_dim_transformers_cannot_read_is_written_and_warned(tmp_path, caplog):
    """llama.cpp and lmforge read qwen3.attention.key_length; transformers' loader assumes 128: the export says so."""
    model = tiny_model("qwen3", vocab_size=320, head_dim=32)
    model.save_pretrained(tmp_path / "hf")
    lm = load(tmp_path / "hf")
    with caplog.at_level("WARNING", logger="lmforge.formats.gguf_arch"):
        write_gguf(lm.model, tiny_tokenizer(), tmp_path / "m.gguf", "f32")
    assert "head_dim 32" in caplog.text and "transformers cannot load this file" in caplog.text
    assert GGUFFile(tmp_path / "m.gguf").fields["qwen3.attention.key_length"] == 32
    ids = [1, 5, 9, 20]
    assert (logits(load(tmp_path / "m.gguf").model, ids) - logits(model, ids)).abs().max() < 1e-4
