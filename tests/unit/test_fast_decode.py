"""The fast single-sequence path decodes exactly what the batched, masked generate() decodes; the CLI works."""

import json

import pytest
import torch

from lmforge.common.errors import LmforgeError
from lmforge.generation.decode_bench import bytes_read_per_token
from lmforge.generation.generate import decode, generate
from lmforge.model import Transformer, get_preset
from lmforge.quant.int_linear import quantize_model
from tests.cli_util import run_cli
from tests.context_lm import assert_not_constant, context_model, naive_greedy
from tests.hf_models import tiny_hf_model


@pytest.mark.parametrize("bits", [None, 8, 4])
def test_fast_decode_equals_generate(bits):
    model = context_model()
    if bits:
        quantize_model(model, bits=bits, group_size=32)
    prompt = [5, 17, 99, 3, 42, 7]
    expected = naive_greedy(model, prompt, 24)  # a full forward per token: no cache to share a bug with
    assert_not_constant(expected)
    assert decode(model, prompt, max_new_tokens=24) == generate(model, [prompt], max_new_tokens=24)[0] == expected
    sampled = decode(model, prompt, max_new_tokens=24, temperature=1.0, seed=3)
    assert sampled == generate(model, [prompt], max_new_tokens=24, temperature=1.0, seed=3)[0]


def test_fast_decode_stops_and_checks_its_arguments(context_llama):
    model = context_llama
    free = decode(model, [1, 2, 3], max_new_tokens=10)
    assert_not_constant(free)
    assert decode(model, [1, 2, 3], max_new_tokens=10, stop_token_ids=[free[4]]) == free[:free.index(free[4]) + 1]
    with pytest.raises(LmforgeError, match="context"):
        decode(model, [1] * 10, max_new_tokens=model.config.max_seq_len)
    with pytest.raises(LmforgeError, match="at least one token"):
        decode(model, [], max_new_tokens=3)


def test_bytes_read_per_token_counts_codes_not_floats():
    model = Transformer(get_preset("tiny-llama")).eval()
    cfg = model.config
    linear_params = sum(p.numel() for n, p in model.named_parameters() if "proj" in n)
    float_bytes = bytes_read_per_token(model)
    assert float_bytes >= 4 * (linear_params + cfg.vocab_size * cfg.dim)  # the tied lm_head is read
    quantize_model(model, bits=8)
    int8_bytes = bytes_read_per_token(model)
    assert linear_params + cfg.vocab_size * cfg.dim <= int8_bytes < float_bytes / 3




def test_quantize_cli(tmp_path):
    for args in (["quantize", "--help"], ["bench", "decode", "--help"]):
        assert run_cli(*args, timeout=300).returncode == 0, args
    tiny_hf_model("llama", tie=True).save_pretrained(tmp_path / "hf")
    bad = run_cli("quantize", str(tmp_path / "hf"), "--bits", "5", "--out", str(tmp_path / "q5"), timeout=300)
    assert bad.returncode == 2 and "bits" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("quantize", str(tmp_path / "hf"), "--bits", "4", "--group-size", "128", "--out", str(tmp_path / "q"),
                  timeout=300)
    assert bad.returncode == 2 and "group_size 128" in bad.stderr
    ok = run_cli("quantize", str(tmp_path / "hf"), "--bits", "4", "--group-size", "32", "--out", str(tmp_path / "q4"),
                 timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "q4" / "quantization_config.json").read_text())["bits"] == 4
    from lmforge.formats.loader import load

    model = load(tmp_path / "q4").model
    assert model.quant_config.bits == 4 and model.quant_config.group_size == 32
    with torch.no_grad():
        assert model(torch.tensor([[1, 2, 3]])).isfinite().all()


@pytest.mark.parametrize("bits", [None, 4])
def test_projections_only_speed_runs_every_projection_once_per_step(bits):
    from lmforge.generation.decode_bench import projections_only_tokens_per_s

    model = Transformer(get_preset("tiny-llama")).eval()
    if bits:
        quantize_model(model, bits=bits, group_size=32)
    calls = []
    projections = [m for m in model.modules() if hasattr(m, "in_features")]
    assert len(projections) == 7 * model.config.n_layers + 1  # q, k, v, o, gate, up, down and the lm_head
    for m in projections:
        m.register_forward_hook(lambda mod, args, out: calls.append((mod, tuple(args[0].shape))))
    speed = projections_only_tokens_per_s(model, repeat=2)
    assert speed > 0
    assert len(calls) == 3 * len(projections)  # one warm-up step and two timed ones
    assert all(shape == (1, mod.in_features) for mod, shape in calls)
