"""T5 in GGUF (llama.cpp's `t5` architecture): `lmforge convert T5DIR --to gguf` and lmforge's import of the file,
against the random-weight transformers model it came from and transformers' own GGUF loader reading the same file.

transformers' loader reads every t5 file as gated ReLU and ignores t5.decoder_block_count (gguf_arch_t5.py says
why), so its reading is given the config (`feed_forward_proj`) that llama.cpp's graph implies; the weights it loads
are its own dequantization of the file.
"""

import string

import gguf
import pytest
import torch
import transformers
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, pre_tokenizers, processors
from tokenizers.models import Unigram

from lmforge.common.errors import LmforgeError
from lmforge.formats.gguf_arch_t5 import t5_hf_config, t5_hf_names
from lmforge.formats.gguf_export import write_gguf
from lmforge.formats.gguf_file import GGUFFile
from lmforge.formats.loader import load
from lmforge.tokenizer.tokenizer import Tokenizer
from tests.cli_util import assert_user_error, run_cli
from tests.tiny_lm import tiny_tokenizer

IDS = torch.tensor([[5, 17, 42, 8, 99, 3, 250, 12, 1], [7, 7, 31, 200, 1, 0, 0, 0, 0]])
MASK = (torch.arange(9) < torch.tensor([[9], [5]])).long()
DECODER_IDS = torch.tensor([[0, 7, 9, 11, 300], [0, 4, 4, 19, 2]])
# feed_forward_proj -> tie_word_embeddings: flan-t5 (gated GELU, own head, unscaled) and the original T5 (ReLU,
# tied head scaled by d_model^-0.5, which the export folds into output.weight for llama.cpp), with a byte-level BPE
# tokenizer and T5's SentencePiece Unigram (tokenizer.ggml.model "t5") respectively
VARIANTS = {"gated-gelu": False, "relu": True}
TEXTS = ["the cat sat on the mat.", "hello  world!", " leading and trailing ", "xyz QQ 42 <extra_id_0> end",
         "<extra_id_99> ünï 东京 🙂", ""]


def unigram_tokenizer() -> Tokenizer:
    """A T5-style SentencePiece Unigram tokenizer (as transformers' T5Tokenizer builds one): <pad> </s> <unk>, scored
    pieces, then the 100 sentinels <extra_id_99> ... <extra_id_0>; every encoding ends with </s>."""
    words = ["the", "cat", "sat", "on", "mat", "hello", "world", "in", "and", "he", "llo", "wor", "ld", "at", "th"]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -5.0 - i / 100) for i, c in enumerate(string.ascii_lowercase + string.digits + ".,!?'")]
    pieces += [("▁" + w, -3.0 - i / 10) for i, w in enumerate(words)] + [(w, -4 - i / 10) for i, w in enumerate(words)]
    sentinels = [f"<extra_id_{i}>" for i in reversed(range(100))]
    backend = Backend(Unigram(pieces + [(s, 0.0) for s in sentinels], unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    backend.decoder = decoders.Metaspace()
    backend.add_special_tokens(["<pad>", "</s>", "<unk>", *sentinels])
    backend.post_processor = processors.TemplateProcessing(single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"],
                                                           special_tokens=[("</s>", 1)])
    return Tokenizer(backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>")


TOKENIZERS = {"gated-gelu": tiny_tokenizer, "relu": unigram_tokenizer}  # byte-level BPE, and T5's Unigram


def t5_dir(root, feed_forward: str, tie: bool, max_distance: int = 128):
    cfg = transformers.T5Config(vocab_size=320, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                                num_heads=4, relative_attention_num_buckets=8,
                                relative_attention_max_distance=max_distance, feed_forward_proj=feed_forward,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0,
                                tie_word_embeddings=tie)
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" not in name:
                p.normal_(0, 0.5 if "relative_attention_bias" in name else 0.1)
    path = root / f"{feed_forward}-{max_distance}"
    model.save_pretrained(path)
    TOKENIZERS[feed_forward]().save(path)
    return path, model


@pytest.fixture(scope="module")
def t5_files(tmp_path_factory):
    """For each variant: (transformers model, F32 file, Q8_0 file)."""
    root = tmp_path_factory.mktemp("t5gguf")
    files = {}
    for feed_forward, tie in VARIANTS.items():
        path, model = t5_dir(root, feed_forward, tie)
        f32, q8 = root / f"{feed_forward}-f32.gguf", root / f"{feed_forward}-q8_0.gguf"
        lm = load(path)
        if feed_forward == "relu":  # through the CLI once (the original T5: Unigram tokenizer, scaled head folded)
            result = run_cli("convert", str(path), "--to", "gguf", "--type", "f32", "--out", str(f32))
            assert result.returncode == 0, result.stderr
            assert f"wrote {f32}: t5" in result.stdout
        else:
            write_gguf(lm.model, lm.tokenizer, f32, "f32")
        # every projection, embedding and output (llama.cpp keeps norms and relative position biases in F32)
        assert write_gguf(lm.model, lm.tokenizer, q8, "q8_0") == {"Q8_0": 34 if feed_forward == "relu" else 38,
                                                                  "F32": 14}
        files[feed_forward] = model, f32, q8
    return files


def logits(model, **extra):
    with torch.no_grad():
        if isinstance(model, transformers.PreTrainedModel):
            return model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DECODER_IDS).logits
        return model(IDS, DECODER_IDS, MASK)


def transformers_reading(path, feed_forward: str):
    """transformers' GGUF loader on `path`, told the activation llama.cpp's t5 graph uses."""
    config = transformers.AutoConfig.from_pretrained(path.parent, gguf_file=path.name).to_dict()
    for derived in ("dense_act_fn", "is_gated_act"):  # recomputed from feed_forward_proj
        config.pop(derived)
    config = transformers.T5Config(**config | {"feed_forward_proj": feed_forward})
    return transformers.AutoModelForSeq2SeqLM.from_pretrained(path.parent, gguf_file=path.name, config=config).eval()


@pytest.mark.parametrize("feed_forward", list(VARIANTS))
def test_t5_gguf_logits_equal_the_original_and_transformers(t5_files, feed_forward):
    reference, f32, q8 = t5_files[feed_forward]
    want = logits(reference)
    lm = load(f32)
    assert lm.model.config.feed_forward == feed_forward and not lm.model.config.scale_decoder_outputs
    assert (logits(lm.model) - want).abs().max() < 1e-4
    assert (logits(transformers_reading(f32, feed_forward)) - want).abs().max() < 1e-4
    ours = logits(load(q8).model)
    assert (ours - logits(transformers_reading(q8, feed_forward))).abs().max() < 1e-4  # same dequantized weights
    error = (ours - want).abs().max().item()
    assert 0 < error < 0.05 * want.abs().max()
    fields = GGUFFile(f32).fields
    assert fields["general.architecture"] == "t5" and fields["t5.decoder_block_count"] == 2
    assert fields["t5.attention.relative_buckets_count"] == 8
    assert fields["tokenizer.ggml.model"] == ("t5" if feed_forward == "relu" else "gpt2")
    source = TOKENIZERS[feed_forward]()
    # transformers reads a t5 file's tokenizer with its T5Tokenizer class, which always appends </s> and adds 100
    # sentinels: right for T5's Unigram vocabulary only, so only that one is compared with it
    theirs = transformers.AutoTokenizer.from_pretrained(f32.parent, gguf_file=f32.name) if feed_forward == "relu" \
        else None
    for text in TEXTS:  # the tokenizer round-trips: same ids as the source, and as transformers reads the file
        ids = source.encode(text)
        assert lm.tokenizer.encode(text) == ids, text
        assert theirs is None or theirs.encode(text) == ids, text
        assert lm.tokenizer.decode(ids, skip_special_tokens=True) == source.decode(ids, skip_special_tokens=True)


def test_t5_gguf_generates_like_the_hf_directory(t5_files):
    from lmforge.generation.sampling_params import SamplingParams
    from lmforge.generation.seq2seq import seq2seq_generate

    _, f32, _ = t5_files["gated-gelu"]
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    prompt = [[5, 17, 42, 8, 99, 3, 250, 12, 1]]
    hf_dir = f32.parent / "gated-gelu-128"
    assert seq2seq_generate(load(f32).model, prompt, params) == seq2seq_generate(load(hf_dir).model, prompt, params)


def test_t5_gguf_bad_input_is_a_user_error(tmp_path, t5_files):
    _, f32, _ = t5_files["relu"]
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(f32.read_bytes()[: f32.stat().st_size // 2])
    assert_user_error(run_cli("convert", str(truncated), "--out", str(tmp_path / "hf")), "runs past the end")
    path, _ = t5_dir(tmp_path, "gated-gelu", False, max_distance=20)
    assert_user_error(run_cli("convert", str(path), "--to", "gguf", "--out", str(tmp_path / "x.gguf")),
                      "relative_attention_max_distance=20", "128")
    writer = gguf.GGUFWriter(tmp_path / "odd.gguf", "t5encoder")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 32).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_user_error(run_cli("convert", str(tmp_path / "odd.gguf"), "--out", str(tmp_path / "hf2")),
                      "'t5encoder'", "t5")
    reader = GGUFFile(f32)  # a block count the tensors do not bear out is refused before anything that size is built
    lying = {**reader.fields, "t5.block_count": 10**9}
    with pytest.raises(LmforgeError, match="1000000000 enc layers"):
        t5_hf_names({t.name: t for t in reader.tensors}, t5_hf_config(lying, {t.name: t for t in reader.tensors}))


def test_convert_to_gguf_refuses_an_existing_file_unless_forced(tmp_path, t5_files):
    _, f32, _ = t5_files["relu"]
    out = tmp_path / "m.gguf"
    out.write_bytes(b"precious")
    assert_user_error(run_cli("convert", str(f32), "--to", "gguf", "--out", str(out)), str(out), "--force")
    assert out.read_bytes() == b"precious"
    result = run_cli("convert", str(f32), "--to", "gguf", "--type", "f32", "--out", str(out), "--force")
    assert result.returncode == 0, result.stderr
    assert (logits(load(out).model) - logits(load(f32).model)).abs().max() == 0
