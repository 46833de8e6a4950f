"""Inference-time context extension: the loaded model re-reads its replaced config (RoPE scaling, max_seq_len)."""

import pytest
import torch

from lmforge.common.errors import ConfigError
from lmforge.generation.generate import generate
from lmforge.generation.sampling_params import SamplingParams
from lmforge.model.context_extension import extend_context, extended_config
from lmforge.model.presets import get_preset
from lmforge.model.transformer import Transformer


def tiny_llama() -> Transformer:
    torch.manual_seed(0)
    return Transformer(get_preset("tiny-llama")).eval()


def test_linear_scaling_is_position_interpolation():
    """Position interpolation by F: the scaled model at positions F*p is the original model at positions p."""
    model = tiny_llama()
    ids = torch.randint(0, 256, (1, 24))
    pos = torch.arange(24)[None]
    with torch.no_grad():
        reference = model(ids, positions=pos)
        extend_context(model, "linear", 4.0)
        scaled = model(ids, positions=4 * pos)
        unscaled_pos = model(ids, positions=pos)
    torch.testing.assert_close(scaled, reference, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(unscaled_pos, reference, atol=1e-3)  # the frequencies really changed
    assert model.config.max_seq_len == 4 * 256 and model.config.positions.rope_scaling == {"rope_type": "linear",
                                                                                 "factor": 4.0}


def test_extended_model_generates_past_the_original_context():
    model = tiny_llama()  # max_seq_len 256
    prompt = torch.randint(0, 256, (300,)).tolist()
    with pytest.raises(Exception, match="context of 256"):
        generate(model, [prompt], SamplingParams(temperature=0, max_new_tokens=4))
    extend_context(model, "yarn", 2.0, max_context=400)
    out = generate(model, [prompt], SamplingParams(temperature=0, max_new_tokens=4))[0]
    assert len(out) == 4
    assert model.config.positions.rope_scaling["original_max_position_embeddings"] == 256


def test_bad_extension_options_name_the_flag():
    cfg = get_preset("tiny-llama")
    with pytest.raises(ConfigError, match="rope-factor"):
        extended_config(cfg, "linear", 0.5)
    with pytest.raises(ConfigError, match="dynamic NTK"):
        extended_config(cfg, "dynamic", 2.0)
    with pytest.raises(ConfigError, match="need --rope-scaling"):
        extended_config(cfg, None, 2.0)
    assert extended_config(cfg, max_context=512).max_seq_len == 512
