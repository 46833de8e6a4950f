"""ALiBi positions against transformers' BLOOM (random weights, built offline): slopes for every head count, logits
within 1e-4 (a left-padded batch included), greedy generation with the KV cache equal to transformers' generate,
save back, `lmforge generate` on the directory, and caches that mask by themselves refusing ALiBi models."""

import json

import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.formats.loader import load
from lmforge.generation.cache import StaticKVCache
from lmforge.generation.generate import generate
from lmforge.model.alibi import alibi_slopes
from lmforge.model.config import ModelConfig
from tests.cli_util import run_cli
from tests.tiny_lm import tiny_tokenizer

transformers = pytest.importorskip("transformers")

PROMPT = [5, 17, 42, 8, 99, 3, 250, 12]


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
    assert want[0, -1].argmax() != want[0, 3].argmax() or want[0, -1].std() > 0  # not a constant output


def test_bloom_greedy_generation_with_kv_cache_matches_transformers(bloom_dir):
    path, ref = bloom_dir
    lm = load(path)
    with torch.no_grad():
        want = ref.generate(torch.tensor([PROMPT]), max_new_tokens=16, do_sample=False, eos_token_id=None,
                            pad_token_id=0)[0, len(PROMPT):].tolist()
    assert len(set(want)) > 3, want  # the fixture is context-dependent, not a constant token
    got = generate(lm.model, [PROMPT], max_new_tokens=16, temperature=0.0)[0]
    assert got == want
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
    result = run_cli("generate", "the cat", "--model", str(path), "--max-new-tokens", "6", "--temperature", "0",
                     "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["prompt_tokens"], out["completion_tokens"], out["text"]) == (len(ids), len(want), text)


def test_serving_engine_serves_bloom_on_the_pytorch_paged_path(bloom_dir):
    """The C++ paged kernel has no ALiBi: the engine says so and attends through the PyTorch paged path, which adds
    the biases in decode groups and in prompt chunks that start after cached tokens (chunked prefill)."""
    from lmforge.engine.llm import LLM, EngineConfig
    from lmforge.generation.cache.paged_backend import PagedTorchBackend
    from lmforge.generation.sampling_params import SamplingParams

    path, ref = bloom_dir
    lm = load(path)
    prompts = [PROMPT, PROMPT[2:7], [9, 4, 4, 100, 33, 2 + 5, 61, 77, 8, 19, 250]]
    llm = LLM(lm.model, config=EngineConfig(block_size=4, num_blocks=64, max_num_batched_tokens=6,
                                            chunked_prefill=True))
    assert isinstance(llm.runner.cache.backend, PagedTorchBackend) and llm.runner.cache.backend.alibi_slopes is not None
    outs = llm.generate(prompts, SamplingParams(max_new_tokens=10, temperature=0.0))
    for prompt, out in zip(prompts, outs, strict=True):
        with torch.no_grad():
            want = ref.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=None,
                                pad_token_id=0)[0, len(prompt):].tolist()
        assert out.output_ids == want
