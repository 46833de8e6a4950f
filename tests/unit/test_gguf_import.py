"""GGUF import on tiny files written here with gguf.GGUFWriter the way llama.cpp's converter writes them.

References: the random transformers model the file came from, transformers' own GGUF loader and tokenizer,
numpy dequantizers written from the block layouts, and transformers' torch K-quant dequantizer.
"""

import dataclasses
import re
from dataclasses import dataclass, field

import gguf
import numpy as np
import pytest
import torch
import transformers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_import import SUPPORTED_QUANT_TYPES, read_gguf

Q = gguf.GGMLQuantizationType
K_QUANT_SCALES = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
DIMS = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=128)  # fmt: skip


@dataclass
class Vocab:
    model: str
    tokens: list[str]
    types: list[int]
    pre: str | None = None
    merges: list[str] = field(default_factory=list)
    scores: list[float] | None = None
    ids: dict[str, int] = field(default_factory=dict)  # bos / eos / unk / pad
    add_bos: bool | None = None


def byte_level_vocab() -> Vocab:
    """Three control tokens, the 256-character byte alphabet, five merges and one user-defined token."""
    alphabet = list(bytes_to_unicode().values())
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
    merged = [merge.replace(" ", "") for merge in merges]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *alphabet, *merged, "<think>"]
    types = [3, 3, 3] + [1] * (len(tokens) - 4) + [4]
    return Vocab("gpt2", tokens, types, pre="gpt2", merges=merges, ids=dict(bos=1, eos=2, unk=0, pad=2), add_bos=False)


def sentencepiece_vocab() -> Vocab:
    """<unk> <s> </s>, the 256 <0xNN> byte-fallback tokens, pieces ranked by score, and one user-defined token."""
    pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "a", "n", "i", "▁h", "he", "ll", "llo", "▁he", "▁hello",
              "or", "ld", "▁w", "▁wor", "▁world", "an", "▁an", "▁and", "in", "▁in", "▁a",
              "x", "y", "z", "yz", "xy"]  # fmt: skip
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces, "<think>"]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces) + [4]
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))] + [0.0]
    return Vocab("llama", tokens, types, scores=scores, ids=dict(bos=1, eos=2, unk=0))


def tiny_model(arch="llama", vocab_size=265, tied=True, **overrides):
    cls = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3"}[arch]
    config = getattr(transformers, f"{cls}Config")(
        vocab_size=vocab_size, tie_word_embeddings=tied, **(DIMS | overrides)
    )
    torch.manual_seed(0)
    model = getattr(transformers, f"{cls}ForCausalLM")(config).eval()
    with torch.no_grad():  # norms and biases are constant at init: randomise them so mistakes show
        for param in model.parameters():
            if param.ndim == 1:
                param.copy_(torch.randn_like(param))
    return model


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def gguf_tensor_name(hf_name: str) -> str:
    name = re.sub(r"^model\.layers\.(\d+)\.", r"blk.\1.", hf_name)
    for hf, ours in [("model.embed_tokens", "token_embd"), ("model.norm", "output_norm"), ("lm_head", "output"),
                     ("self_attn.q_norm", "attn_q_norm"), ("self_attn.k_norm", "attn_k_norm"),
                     ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                     ("self_attn.o_proj", "attn_output"), ("input_layernorm", "attn_norm"),
                     ("post_attention_layernorm", "ffn_norm"), ("mlp.gate_proj", "ffn_gate"),
                     ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")]:  # fmt: skip
        name = name.replace(hf, ours)
    return name


def llamacpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: interleave each head's two rotary halves."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode(data: np.ndarray, qtype: str, rng) -> tuple[np.ndarray, Q | None]:
    if qtype == "F32" or data.ndim == 1:
        return data.astype(np.float32), None
    if qtype == "F16":
        return data.astype(np.float16), None
    if qtype not in K_QUANT_SCALES:
        return gguf.quants.quantize(data, Q[qtype]), Q[qtype]
    # gguf-py cannot quantize K types: write random blocks with small, finite fp16 scales instead.
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[Q[qtype]]
    rows, blocks = data.shape[0], data.shape[1] // block_elems
    raw = rng.integers(0, 256, (rows, blocks, block_bytes), dtype=np.uint8)
    for offset in K_QUANT_SCALES[qtype]:
        scale = rng.uniform(1e-3, 1e-2, (rows, blocks)).astype(np.float16)
        raw[..., offset : offset + 2] = scale.view(np.uint8).reshape(rows, blocks, 2)
    return raw.reshape(rows, -1), Q[qtype]


def write_gguf(path, model, qtype="F32", vocab=None, arch="llama", extra=None, metadata=None) -> dict:
    """Write `model` as llama.cpp would; returns {gguf name: (stored array, ggml type or None)}."""
    cfg, vocab, rng = model.config, vocab or byte_level_vocab(), np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), arch)
    head_dim_key = "key_length" if arch == "qwen3" else "rope_dimension_count"
    for key, value in [("name", "tiny test model"), ("context_length", cfg.max_position_embeddings),
                       ("embedding_length", cfg.hidden_size), ("block_count", cfg.num_hidden_layers),
                       ("feed_forward_length", cfg.intermediate_size), ("head_count", cfg.num_attention_heads),
                       ("head_count_kv", cfg.num_key_value_heads), ("vocab_size", cfg.vocab_size),
                       ("rope_freq_base", cfg.rope_parameters["rope_theta"]), ("layer_norm_rms_eps", cfg.rms_norm_eps),
                       (head_dim_key, head_dim(cfg)), ("tokenizer_model", vocab.model), ("tokenizer_pre", vocab.pre),
                       ("token_list", vocab.tokens), ("token_types", vocab.types), ("token_merges", vocab.merges),
                       ("token_scores", vocab.scores), ("add_bos_token", vocab.add_bos),
                       *((f"{name}_token_id", token_id) for name, token_id in vocab.ids.items()),
                       ("chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}")]:  # fmt: skip
        if value is not None and value != []:
            getattr(writer, f"add_{key}")(value)
    for key, value in (metadata or {}).items():
        writer.add_uint32(key, value)
    stored = {}
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = tensor.float().numpy()
        if arch == "llama" and (".q_proj." in hf_name or ".k_proj." in hf_name):
            data = llamacpp_permute(data, cfg.num_attention_heads if ".q_proj." in hf_name else cfg.num_key_value_heads)
        stored[gguf_tensor_name(hf_name)] = encode(data, qtype, rng)
    stored |= extra or {}
    for name, (array, raw_dtype) in stored.items():
        writer.add_tensor(name, array, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


# Independent dequantizers, from the ggml block layouts (an fp16 scale `d`, sometimes a min `m`, then quants).
def _half(blocks, at):
    return blocks[:, at : at + 2].copy().view(np.float16).astype(np.float32)


def _nibbles(qs):  # low nibbles are elements 0..15 of the block, high nibbles 16..31
    return np.concatenate([qs & 0xF, qs >> 4], axis=1).astype(np.float32)


def _fifth_bits(blocks, at):
    qh = blocks[:, at : at + 4].copy().view(np.uint32)
    return ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.float32) * 16


def reference_dequantize(array: np.ndarray, qtype: str) -> np.ndarray:
    if qtype in ("F32", "F16"):
        return array.astype(np.float32)
    if qtype == "BF16":
        return (array.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    if qtype in K_QUANT_SCALES:  # transformers' own torch implementation of the K-quant layouts
        from transformers.integrations.gguf.dequant import dequantize

        return dequantize(torch.from_numpy(array.reshape(-1)), int(Q[qtype])).reshape(array.shape[0], -1).numpy()
    size = gguf.GGML_QUANT_SIZES[Q[qtype]][1]
    b = array.reshape(-1, size)
    if qtype == "Q8_0":
        values = _half(b, 0) * b[:, 2:].view(np.int8).astype(np.float32)
    elif qtype == "Q4_0":
        values = _half(b, 0) * (_nibbles(b[:, 2:]) - 8)
    elif qtype == "Q4_1":
        values = _half(b, 0) * _nibbles(b[:, 4:]) + _half(b, 2)
    elif qtype == "Q5_0":
        values = _half(b, 0) * (_nibbles(b[:, 6:]) + _fifth_bits(b, 2) - 16)
    elif qtype == "Q5_1":
        values = _half(b, 0) * (_nibbles(b[:, 8:]) + _fifth_bits(b, 4)) + _half(b, 2)
    return values.reshape(array.shape[0], -1)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", tied=False)


def test_f32_round_trip_equals_original_weights(tmp_path, llama):
    """Un-permuting Q/K must give back the very tensors the file was made from (llama.cpp's permute undone)."""
    write_gguf(tmp_path / "m.gguf", llama)
    checkpoint = read_gguf(tmp_path / "m.gguf")
    original = llama.state_dict()
    assert checkpoint.state_dict.keys() == original.keys()
    for name, tensor in original.items():
        assert checkpoint.state_dict[name].dtype == torch.float32
        assert torch.equal(checkpoint.state_dict[name], tensor), name
    cfg = checkpoint.hf_config
    expected = dict(model_type="llama", vocab_size=265, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                    max_position_embeddings=128, tie_word_embeddings=False, attention_bias=False, bos_token_id=1,
                    eos_token_id=2, pad_token_id=2)  # fmt: skip
    assert {key: cfg[key] for key in expected} == expected
    assert checkpoint.metadata["name"] == "tiny test model"
    assert checkpoint.quant_types == {"F32": len(original)}


@pytest.mark.parametrize("qtype", SUPPORTED_QUANT_TYPES)
def test_dequantization_matches_reference(tmp_path, llama, qtype):
    stored = write_gguf(tmp_path / f"{qtype}.gguf", llama, qtype)
    checkpoint = read_gguf(tmp_path / f"{qtype}.gguf")
    heads = {".attn_q.": llama.config.num_attention_heads, ".attn_k.": llama.config.num_key_value_heads}
    for hf_name, ours in checkpoint.state_dict.items():
        array, raw_dtype = stored[gguf_tensor_name(hf_name)]
        expected = reference_dequantize(array, raw_dtype.name if raw_dtype is not None else "F32")
        got = ours.numpy()
        for part, n in heads.items():  # compare in the file's layout, permuted by the test's own llama.cpp code
            got = llamacpp_permute(got, n) if part in gguf_tensor_name(hf_name) else got
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7, err_msg=hf_name)
    if qtype in ("F16", "BF16", "Q8_0"):  # precise types also stay close to the original weights
        for name, tensor in llama.state_dict().items():
            torch.testing.assert_close(checkpoint.state_dict[name], tensor, atol=0.01, rtol=0.01)


@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"])
def test_state_dict_equals_transformers_gguf_loader(tmp_path, qtype):
    model = tiny_model("llama", tied=qtype != "F32")
    write_gguf(tmp_path / "m.gguf", model, qtype)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32)
    ours = read_gguf(tmp_path / "m.gguf").state_dict
    reference = theirs.state_dict()
    if model.config.tie_word_embeddings:
        assert "lm_head.weight" not in ours
        assert torch.equal(reference.pop("lm_head.weight"), ours["model.embed_tokens.weight"])
    assert ours.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(ours[name], tensor), name


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_qwen_files_are_not_permuted_and_keep_biases_and_qk_norms(tmp_path, arch):
    overrides = {"head_dim": 32} if arch == "qwen3" else {}  # Qwen3's head_dim differs from hidden / heads
    model = tiny_model(arch, **overrides)
    write_gguf(tmp_path / "m.gguf", model, arch=arch)
    checkpoint = read_gguf(tmp_path / "m.gguf", dtype=torch.bfloat16)
    original = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert checkpoint.state_dict.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(checkpoint.state_dict[name], tensor.to(torch.bfloat16)), name
    assert checkpoint.hf_config["model_type"] == arch
    assert checkpoint.hf_config["head_dim"] == head_dim(model.config) == (32 if arch == "qwen3" else 64)
    assert checkpoint.hf_config["attention_bias"] == (arch == "qwen2")
    assert ("model.layers.0.self_attn.q_norm.weight" in checkpoint.state_dict) == (arch == "qwen3")


TEXTS = ["Hello world", "the cat in a hat", "  two  spaces\n\nnew lines\t", "12345 + 678", "héllo wörld ✓",
         "<|im_start|>user\nHi<|im_end|>", "<think>the plan</think>", "", "hello world and <s>in</s>",
         "xyz", "<unk> <|endoftext|>"]  # fmt: skip


@pytest.mark.parametrize("make_vocab, pre", [(byte_level_vocab, "gpt2"), (byte_level_vocab, "llama-bpe"),
                                             (byte_level_vocab, "qwen2"), (sentencepiece_vocab, None)])  # fmt: skip
def test_tokenizer_encodes_like_transformers(tmp_path, make_vocab, pre):
    vocab = dataclasses.replace(make_vocab(), pre=pre)
    write_gguf(tmp_path / "m.gguf", tiny_model(vocab_size=len(vocab.tokens)), vocab=vocab)
    checkpoint = read_gguf(tmp_path / "m.gguf")
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    for text in TEXTS:
        ids = checkpoint.tokenizer.encode(text).ids
        assert ids == theirs.encode(text), text
        assert checkpoint.tokenizer.decode(ids, skip_special_tokens=False) == theirs.decode(ids), text
    first, second = ("<|im_start|>", "<think>") if vocab.model == "gpt2" else ("<s>", "<think>")
    for token in (first, second):  # control and user-defined tokens stay whole
        assert checkpoint.tokenizer.encode(token, add_special_tokens=False).ids == [vocab.tokens.index(token)]
    config = checkpoint.tokenizer_config
    assert config["bos_token"] == vocab.tokens[vocab.ids["bos"]]
    assert config["eos_token"] == vocab.tokens[vocab.ids["eos"]]
    assert config["add_bos_token"] == (vocab.model == "llama")  # llama.cpp's default for SentencePiece
    assert config["chat_template"].startswith("{% for m in messages %}")


def test_missing_path_is_named(tmp_path):
    with pytest.raises(LmforgeError, match="not found.*nowhere.gguf"):
        read_gguf(tmp_path / "nowhere.gguf")


def test_non_gguf_file_is_refused(tmp_path):
    (tmp_path / "model.gguf").write_text("definitely not a model")
    with pytest.raises(LmforgeError, match="not a GGUF file"):
        read_gguf(tmp_path / "model.gguf")


def test_unsupported_architecture_is_named_with_the_supported_list(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "mamba")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LmforgeError, match=r"'mamba'.*supported: llama, qwen2, qwen3, qwen3moe, gemma3"):
        read_gguf(tmp_path / "m.gguf")


def test_unsupported_quant_type_names_type_and_tensor(tmp_path, llama):
    blocks = np.zeros((265, 66), dtype=np.uint8)  # one IQ2_XXS block (66 bytes, 256 values) per row
    write_gguf(tmp_path / "m.gguf", llama, extra={"output.weight": (blocks, Q.IQ2_XXS)})
    with pytest.raises(LmforgeError, match=r"'output.weight' uses GGML type IQ2_XXS.*supported: F32"):
        read_gguf(tmp_path / "m.gguf")


def test_tensor_with_wrong_shape_names_tensor_and_both_shapes(tmp_path, llama):
    wrong = np.zeros((llama.config.intermediate_size, 128), dtype=np.float32)
    write_gguf(tmp_path / "m.gguf", llama, extra={"blk.1.ffn_up.weight": (wrong, None)})
    with pytest.raises(LmforgeError, match=r"'blk.1.ffn_up.weight'.*\[512, 128\].*\[512, 256\]"):
        read_gguf(tmp_path / "m.gguf")


@pytest.mark.parametrize(
    "change, message",
    [({"model": "rwkv"}, r"tokenizer model 'rwkv'.*supported: gpt2, llama, t5"),
     ({"pre": "jais"}, r"pre-tokenizer 'jais'.*supported: default, gpt2, smollm")],
)  # fmt: skip
def test_unsupported_tokenizer_is_named_with_the_supported_list(tmp_path, change, message):
    write_gguf(tmp_path / "m.gguf", tiny_model(), vocab=dataclasses.replace(byte_level_vocab(), **change))
    with pytest.raises(LmforgeError, match=message):
        read_gguf(tmp_path / "m.gguf")


def test_non_float_dtype_is_refused(tmp_path):
    with pytest.raises(LmforgeError, match="floating.*torch.int8"):
        read_gguf(tmp_path / "m.gguf", dtype=torch.int8)


@pytest.mark.parametrize("llama3", [True, False])
def test_llama31_rope_freqs_are_applied(tmp_path, llama3):
    """A Llama-3.1 GGUF's rope_freqs tensor scales RoPE as transformers' llama3 scaling does (else is applied raw)."""
    import transformers

    from lmforge.formats.loader import load
    from lmforge.model.rope import rope_inv_freq
    from lmforge.model.rope_scaling import scaled_inv_freq

    # original context 64 with theta 500: channels fall in all three bands (kept, blended, divided by 8)
    params = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64}
    config = transformers.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      rope_parameters={**params, "rope_theta": 500.0}, tie_word_embeddings=True)
    ref = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    factors = (rope_inv_freq(16, 500.0) / scaled_inv_freq(16, 500.0, params, 256)[0]).numpy()
    assert factors.min() == 1.0 and factors.max() == pytest.approx(8.0) and ((factors > 1.01) & (factors < 7)).any()
    if not llama3:
        factors = factors * np.linspace(1.0, 1.5, 8, dtype=np.float32)
    write_gguf(tmp_path / "m.gguf", ref, extra={"rope_freqs.weight": (factors.astype(np.float32), None)},
               metadata={"llama.rope.scaling.original_context_length": 64})
    lm = load(tmp_path / "m.gguf")
    assert lm.config.positions.rope_scaling["rope_type"] == ("llama3" if llama3 else "freq_factors")
    ids = torch.randint(0, 300, (1, 40))
    ones = torch.ones_like(ids)
    with torch.no_grad():
        ours = lm.model(ids)
        if not llama3:  # transformers cannot express raw divisors: put them on its inv_freq buffer
            ref.model.rotary_emb.inv_freq.copy_(rope_inv_freq(16, 500.0) / torch.from_numpy(factors))
        assert (ours - ref(ids, attention_mask=ones).logits).abs().max() <= 1e-4
        ref.model.rotary_emb.inv_freq.copy_(rope_inv_freq(16, 500.0))  # what ignoring rope_freqs would give
        assert (ours - ref(ids, attention_mask=ones).logits).abs().max() > 1e-3
