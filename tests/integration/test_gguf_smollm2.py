"""The embedded SmolLM2-135M-Instruct GGUF (Q4_1 + Q8_0) imported by lmforge versus transformers' GGUF loader.

Same tensors bit for bit, same config, a transformers model built from our config and weights gives the same
logits, and the tokenizer rebuilt from GGUF metadata encodes and decodes like transformers' GGUF tokenizer.
"""

import pytest
import torch
import transformers

from lmforge.formats.gguf_import import read_gguf
from tests.embedded import embedded_gguf, transformers_reference

pytestmark = pytest.mark.slow

TEXTS = [
    "Hello, world! This is SmolLM2.",
    "12345 and 3.14159, 2024-06-01",
    "multiple   spaces    here  ",
    "line one\nline two\n\n\ttabbed\r\n",
    "def add(a, b):\n    return a + b  # sum\n",
    "机器学习是人工智能的一个分支。",
    "emoji 🚀🔥 and accents: café naïve Ångström",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after end",
    "",
]


@pytest.fixture(scope="module")
def gguf_path():
    return embedded_gguf()


@pytest.fixture(scope="module")
def ours(gguf_path):
    return read_gguf(gguf_path)


@pytest.fixture(scope="module")
def hf_model(gguf_path):
    return transformers_reference()[0]  # transformers' read of the GGUF (saved once per machine)


@pytest.fixture(scope="module")
def hf_tokenizer(gguf_path):
    return transformers_reference()[1]


def test_state_dict_equals_transformers(ours, hf_model):
    theirs = hf_model.state_dict()
    tied_head = theirs.pop("lm_head.weight")  # transformers lists the tied head; we leave it to tie_word_embeddings
    assert ours.state_dict.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert ours.state_dict[name].dtype == torch.float32
        assert ours.state_dict[name].shape == tensor.shape, name
        delta = (ours.state_dict[name] - tensor).abs().max()
        assert delta == 0, f"{name}: max |Δ| {delta}"
    assert torch.equal(ours.state_dict["model.embed_tokens.weight"], tied_head)


def test_config_matches_transformers(ours, hf_model):
    theirs, config = hf_model.config, ours.hf_config
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "tie_word_embeddings",
                "bos_token_id", "eos_token_id", "pad_token_id"):  # fmt: skip
        assert config[key] == getattr(theirs, key), key
    assert config["model_type"] == "llama" and ours.architecture == "llama"
    assert config["rms_norm_eps"] == pytest.approx(theirs.rms_norm_eps, rel=1e-6)
    assert config["rope_theta"] == theirs.rope_parameters["rope_theta"] == 100000.0
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert ours.quant_types == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert ours.metadata["organization"] == "HuggingFaceTB"


def test_model_built_from_our_config_and_weights_gives_the_same_logits(ours, hf_model, hf_tokenizer):
    """Our hf_config and state_dict are a complete HF checkpoint: transformers can run them as they are."""
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**ours.hf_config)).eval()
    missing, unexpected = model.load_state_dict(ours.state_dict, strict=False)
    assert unexpected == [] and missing == ["lm_head.weight"]  # tied to the embedding
    ids = torch.tensor([hf_tokenizer.encode("The capital of France is")])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf_model(ids).logits, rtol=0, atol=1e-5)


def test_tokenizer_encodes_and_decodes_like_transformers(ours, hf_tokenizer):
    for text in TEXTS:
        ids = ours.tokenizer.encode(text).ids
        assert ids == hf_tokenizer.encode(text), text
        assert ours.tokenizer.decode(ids, skip_special_tokens=False) == text
        assert hf_tokenizer.decode(ids) == text
    assert ours.tokenizer.encode("12345").tokens == ["1", "2", "3", "4", "5"]  # SmolLM2 splits every digit
    assert ours.tokenizer.encode("<|im_start|>").ids == [hf_tokenizer.convert_tokens_to_ids("<|im_start|>")]
    assert ours.tokenizer.get_vocab_size() == 49152


def test_tokenizer_config_matches_transformers(ours, hf_tokenizer):
    config = ours.tokenizer_config
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert config[name] == getattr(hf_tokenizer, name), name
    assert config["chat_template"] == hf_tokenizer.chat_template
    assert "<|im_start|>" in config["chat_template"]
    assert config["add_bos_token"] is False and config["add_eos_token"] is False
