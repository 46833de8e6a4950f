"""T5 encoder-decoder against transformers' T5ForConditionalGeneration (random weights, built offline), for the
original ReLU feed-forward and v1.1's gated-GELU: teacher-forced logits within 1e-4 (padded inputs included),
greedy generation (encoder once, cached decoder) identical to transformers' generate, save back, and
`lmforge generate` on the directory."""

import json

import pytest
import torch
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.formats.loader import load
from lmforge.generation.sampling_params import SamplingParams
from lmforge.generation.seq2seq import seq2seq_generate
from lmforge.model.t5_position_bias import relative_position_bucket
from tests.tiny_lm import tiny_tokenizer

transformers = pytest.importorskip("transformers")

INPUTS = [[5, 17, 42, 8, 99, 3, 250, 12, 1], [7, 7, 31, 200, 1]]


def t5_dir(root, feed_forward: str, tie: bool):
    """A random T5 (2 encoder, 3 decoder blocks, 8 buckets over distances up to 20, so the logarithmic buckets are
    used) with weights wide enough that its greedy output depends on the input, saved with the tiny tokenizer."""
    cfg = transformers.T5Config(vocab_size=320, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
                                num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                feed_forward_proj=feed_forward, decoder_start_token_id=0, pad_token_id=0,
                                eos_token_id=1, dropout_rate=0.0, tie_word_embeddings=tie)
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" not in name:
                p.normal_(0, 0.5 if "relative_attention_bias" in name else 0.2)
    path = root / feed_forward
    model.save_pretrained(path)
    tiny_tokenizer().save(path)
    return path, model


VARIANTS = {"relu": True, "gated-gelu": False}  # feed_forward_proj -> tie_word_embeddings (v1.1 does not scale)


@pytest.fixture(scope="module")
def t5_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("t5")
    return {ff: t5_dir(root, ff, tie) for ff, tie in VARIANTS.items()}


@pytest.fixture(params=list(VARIANTS), ids=["t5-relu", "t5v1.1-gated-gelu"])
def t5(request, t5_dirs):
    return t5_dirs[request.param]


def hf_greedy(ref, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """transformers' greedy outputs (one right-padded batch) without the start token, cut after EOS.
    use_cache=False: transformers sizes its decoder cache by num_layers, not num_decoder_layers."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    with torch.no_grad():
        out = ref.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                           use_cache=False)[:, 1:].tolist()
    return [row[:row.index(1) + 1] if 1 in row else row for row in out]


def test_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 300)[None, :]
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20)):
            want = T5Attention._relative_position_bucket(rel, bidirectional, buckets, distance)
            assert torch.equal(relative_position_bucket(rel, bidirectional, buckets, distance), want)


def test_t5_logits_match_transformers(t5):
    path, ref = t5
    lm = load(path)
    ids = torch.tensor([INPUTS[0], INPUTS[1] + [0] * 4])
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    dec = torch.tensor([[0, 12, 40, 7, 300], [0, 3, 3, 99, 18]])
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        got = lm.model(ids, dec, attention_mask=mask)
    assert (got - want).abs().max() < 1e-4
    assert (want[0] - want[1]).abs().max() > 1e-2  # the input changes the output


def test_t5_greedy_generation_matches_transformers(t5):
    path, ref = t5
    lm = load(path)
    params = SamplingParams(max_new_tokens=8, temperature=0.0, stop_token_ids=(1,))
    got = seq2seq_generate(lm.model, INPUTS, params)  # a batch of two (the shorter input padded)
    assert got == hf_greedy(ref, INPUTS, 8)
    assert got[0] != got[1] and len(set(got[0] + got[1])) > 3, got  # context-dependent, not a constant output
    # the cached decoder equals the teacher-forced full forward at every step
    with torch.no_grad():
        full = lm.model(torch.tensor([INPUTS[0]]), torch.tensor([[0, *got[0][:-1]]]))[0].argmax(-1).tolist()
    assert full == got[0]


def test_t5_saves_back_to_a_directory_transformers_reloads(t5, tmp_path):
    path, ref = t5
    load(path).save(tmp_path)
    again = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids, dec = torch.tensor([INPUTS[0]]), torch.tensor([[0, 5, 9]])
    with torch.no_grad():
        assert (again(input_ids=ids, decoder_input_ids=dec).logits - ref(input_ids=ids, decoder_input_ids=dec).logits
                ).abs().max() < 1e-5


def test_cli_generate_runs_the_decoder_on_an_encoded_prompt(t5_dirs):
    from lmforge.generation.stop import TextStream

    path, ref = t5_dirs["gated-gelu"]
    lm = load(path)
    prompt = "the cat sat on the mat"
    ids = lm.tokenizer.encode(prompt)
    want = hf_greedy(ref, [ids], 8)[0]
    stream = TextStream(lm.tokenizer)  # the detokenizer every lmforge answer streams through
    text = "".join(stream.push(t)[0] for t in want if t not in lm.stop_token_ids()) + stream.finish()
    args = ["generate", prompt, "--model", str(path), "--max-new-tokens", "8", "--temperature", "0", "--json"]
    result = CliRunner().invoke(app, args)  # the real command in-process (no interpreter start)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["prompt_tokens"], out["completion_tokens"], out["text"]) == (len(ids), len(want), text)
    from lmforge.cli.generate_cmd import generate

    assert "encoder-decoder" in generate.__doc__  # what `lmforge generate --help` prints


def test_decoder_only_paths_refuse_an_encoder_decoder_by_name(t5_dirs):
    from lmforge.common.errors import LmforgeError
    from lmforge.engine.llm import LLM
    from lmforge.generation.generate import generate

    lm = load(t5_dirs["relu"][0])
    with pytest.raises(LmforgeError, match="encoder-decoder"):
        LLM(lm.model)
    with pytest.raises(LmforgeError, match="encoder-decoder"):
        generate(lm.model, [INPUTS[0]], max_new_tokens=2)
