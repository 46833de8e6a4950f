"""ALiBi positions against transformers' BLOOM (random weights, built offline): slopes for every head count, logits
within 1e-4 (a left-padded batch included), greedy generation with the KV cache equal to transformers' generate,
save back, `lmforge generate` on the directory, and caches that mask by themselves refusing ALiBi models."""

import json

import pytest
import torch
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.common.errors import LmforgeError
from lmforge.formats.loader import load
from lmforge.generation.cache import StaticKVCache
from lmforge.generation.generate import generate
from lmforge.model.alibi import alibi_slopes
from lmforge.model.config import ModelConfig
from tests.tiny_lm import tiny_tokenizer

transformers = pytest.importorskip("transformers")

PROMPT = [5, 17, 42, 8, 99, 3, 250, 12]
PROMPTS = [PROMPT, PROMPT[2:7], [9, 4, 4, 100, 33, 7, 61, 77, 8, 19, 250]]


@pytest.fixture(scope="module")
def bloom_dir(tmp_path_factory):
    """A random BloomForCausalLM with 6 heads (not a power of two: the interleaved extra slopes are used), weights
    drawn wide enough that its greedy output depends on the context, saved with the tiny tokenizer."""
    cfg = transformers.BloomConfig(vocab_size=320, hidden_size=48, n_layer=2, n_head=6, bos_token_id=1,
                                   eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.BloomForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" not in name and "ln_f" not in name:
                p.normal_(0, 0.25)
    path = tmp_path_factory.mktemp("bloom")
    model.save_pretrained(path)
    tiny_tokenizer().save(path)
    return path, model


@pytest.fixture(scope="module")
def hf_greedy(bloom_dir):
    """transformers' greedy continuation (8 tokens, no EOS stop) of each of PROMPTS, one by one."""
    _, ref = bloom_dir
    with torch.no_grad():
        return [ref.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0, len(p):].tolist() for p in PROMPTS]


def test_slopes_match_bloom_for_every_head_count():
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    for n in range(1, 33):
        torch.testing.assert_close(alibi_slopes(n), _get_alibi_slopes(n, torch.device("cpu")), rtol=1e-6, atol=0)
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -i for i in range(1, 9)]))  # the paper's 1/2 .. 1/256


def test_bloom_logits_match_transformers_with_left_padding(bloom_dir):
    path, ref = bloom_dir
    lm = load(path)
    assert lm.config.positions.kind == "alibi" and lm.config.family == "bloom"
    ids = torch.tensor([PROMPT, [0, 0, 0, *PROMPT[3:]]])
    mask = torch.tensor([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits
        got = lm.model(ids, attention_mask=mask)
    real = mask.bool()
    assert (got[real] - want[real]).abs().max() < 1e-4
    assert (want[0, -1] - want[1, -1]).abs().max() > 1e-2  # the context changes the output


def test_bloom_greedy_generation_with_kv_cache_matches_transformers(bloom_dir, hf_greedy):
    path, _ = bloom_dir
    lm = load(path)
    # context-dependent: each prompt continues differently, and not with one repeated token
    assert len({tuple(w) for w in hf_greedy}) == 3 and all(len(set(w)) >= 3 for w in hf_greedy), hf_greedy
    assert generate(lm.model, PROMPTS, max_new_tokens=8, temperature=0.0) == hf_greedy  # left-padded batch
    got = generate(lm.model, [PROMPT], max_new_tokens=8, temperature=0.0)[0]  # batch 1: no mask at all
    assert got == hf_greedy[0]
    # the cached decode equals the full forward over the whole sequence at every new position
    with torch.no_grad():
        full = lm.model(torch.tensor([PROMPT + got]))[0, len(PROMPT) - 1:-1].argmax(-1).tolist()
    assert full == got


def test_bloom_saves_back_to_a_directory_transformers_reloads(bloom_dir, tmp_path):
    path, ref = bloom_dir
    load(path).save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "bloom"
    again = transformers.BloomForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        assert (again(ids).logits - ref(ids).logits).abs().max() < 1e-5


def test_caches_that_mask_by_themselves_refuse_alibi_models():
    from lmforge.model import Transformer

    model = Transformer(ModelConfig.from_flat(vocab_size=32, dim=16, n_layers=1, n_heads=2, ffn_dim=32,
                                              pos_embedding="alibi", max_seq_len=16)).eval()
    cache = StaticKVCache(1, 1, 16, 2, 8)
    with pytest.raises(LmforgeError, match="ALiBi"):
        model(torch.tensor([[1, 2, 3]]), kv_cache=cache)


def test_cli_generate_on_a_bloom_directory(bloom_dir):
    from lmforge.generation.stop import TextStream

    path, ref = bloom_dir
    lm = load(path)
    ids = lm.tokenizer.encode("the cat")
    with torch.no_grad():
        want = ref.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=0,
                            eos_token_id=lm.stop_token_ids())[0, len(ids):].tolist()
    stream = TextStream(lm.tokenizer, ids)
    text = "".join(stream.push(t)[0] for t in want if t not in lm.stop_token_ids()) + stream.finish()
    args = ["generate", "the cat", "--model", str(path), "--max-new-tokens", "6", "--temperature", "0", "--json"]
    result = CliRunner().invoke(app, args)  # the real command in-process (no interpreter start)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["prompt_tokens"], out["completion_tokens"], out["text"]) == (len(ids), len(want), text)


def test_serving_engine_serves_bloom_on_the_pytorch_paged_path(bloom_dir, hf_greedy):
    """The C++ paged kernel has no ALiBi: the engine attends through the PyTorch paged path, which adds the biases
    in decode groups and in prompt chunks that start after cached tokens (chunked prefill)."""
    from lmforge.engine.llm import LLM, EngineConfig
    from lmforge.generation.cache.paged_backend import PagedTorchBackend
    from lmforge.generation.sampling_params import SamplingParams

    path, _ = bloom_dir
    llm = LLM(load(path).model, config=EngineConfig(block_size=4, num_blocks=64, max_num_batched_tokens=6,
                                                    chunked_prefill=True))
    assert isinstance(llm.runner.cache.backend, PagedTorchBackend) and llm.runner.cache.backend.alibi_slopes is not None
    outs = llm.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=0.0))
    assert [out.output_ids for out in outs] == hf_greedy
