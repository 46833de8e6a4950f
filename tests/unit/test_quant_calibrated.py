"""Calibrated quantization and pruning of whole models: save / load round trips, and held-out quality on a model
lmforge pretrained here (tests/pretrained_tiny.py): divergence from fp32, perplexity, sparsity patterns."""

import pytest
import torch

from lmforge.data.corpus import document_text
from lmforge.formats.loader import load
from lmforge.formats.quant_io import load_quantized, save_quantized
from lmforge.quant.awq import ScaledInputLinear
from lmforge.quant.calibrated import quantize_calibrated
from lmforge.quant.calibration import calibration_windows
from lmforge.quant.int_linear import Int4Linear, QuantConfig
from lmforge.quant.prune import PruneConfig, prune_model, sparsity_of
from lmforge.quant.prune_recover import recover
from lmforge.quant.smoothquant import W8A8Linear
from tests.context_lm import context_model
from tests.pretrained_tiny import pretrained_tiny_dir


def corpus_text(seed: int, documents: int) -> str:
    return "\n\n".join(document_text(seed, i)[1] for i in range(documents))


@pytest.fixture(scope="session")
def tiny():
    """(pretrained tiny LM, calibration windows from corpus seed 1, held-out windows from seed 2, fp32 log-probs)."""
    lm = load(pretrained_tiny_dir())
    windows = calibration_windows(corpus_text(1, 60), lm.tokenizer, samples=16, seq_len=128)
    heldout = calibration_windows(corpus_text(2, 80), lm.tokenizer, samples=24, seq_len=128)
    with torch.no_grad():
        reference = lm.model(heldout).log_softmax(-1)
    return lm, windows, heldout, reference


def kl_and_ppl(model, tiny) -> tuple[float, float]:
    """(mean KL(fp32 || model) per held-out token, held-out perplexity)."""
    _, _, heldout, reference = tiny
    with torch.no_grad():
        logp = model(heldout).log_softmax(-1)
    kl = float((reference.exp() * (reference - logp)).sum(-1).mean())
    nll = -logp[:, :-1].gather(-1, heldout[:, 1:, None]).mean()
    return kl, float(nll.exp())


def quantized(tiny, **cfg):
    lm, windows, _, _ = tiny
    model = load(lm.source).model
    quantize_calibrated(model, QuantConfig(**cfg), windows)
    return kl_and_ppl(model, tiny)


@pytest.mark.parametrize("cfg", [dict(bits=3, group_size=32, method="awq"), dict(bits=4, group_size=32, method="gptq"),
                                 dict(bits=8, method="smoothquant"), dict(bits=3, group_size=32, method="rtn")])
def test_saved_and_loaded_model_gives_the_same_logits(cfg, tmp_path):
    model = context_model()
    windows = torch.randint(0, model.config.vocab_size, (4, 32))
    quantize_calibrated(model, QuantConfig(**cfg), windows)
    kinds = {"awq": ScaledInputLinear, "gptq": Int4Linear, "smoothquant": W8A8Linear, "rtn": Int4Linear}
    assert isinstance(model.layers[0].mlp.down_proj, kinds[cfg["method"]])
    save_quantized(model, tmp_path)
    loaded, _ = load_quantized(tmp_path)
    assert type(loaded.layers[1].attn.q_proj) is type(model.layers[1].attn.q_proj)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


def test_gptq_and_awq_move_predictions_less_than_rtn_most_at_int3(tiny):
    """On this small, briefly trained model held-out perplexity moves by less than its own noise under int4 / int3
    (the benchmark's table): RTN int3 lands within 0.1% of fp32 either way. The divergence of the predictions from
    fp32's is what the methods reduce, and it is measured here (benchmarks/quant_quality.py: GPTQ halves to thirds
    it; AWQ gains at int3, not at int4 on this model, whose activations have no outlier channels)."""
    kl = {(method, bits): quantized(tiny, bits=bits, group_size=128, method=method)[0]
          for bits in (4, 3) for method in ("rtn", "awq", "gptq")}
    assert kl["gptq", 4] < 0.8 * kl["rtn", 4], kl
    assert kl["gptq", 3] < 0.8 * kl["rtn", 3], kl
    assert kl["awq", 3] < kl["rtn", 3], kl
    gap = {bits: kl["rtn", bits] - kl["gptq", bits] for bits in (4, 3)}
    assert gap[3] > gap[4] > 0, kl


def test_smoothquant_w8a8_is_within_one_percent_of_fp32(tiny):
    lm = tiny[0]
    fp32 = kl_and_ppl(lm.model, tiny)[1]
    kl, ppl = quantized(tiny, bits=8, method="smoothquant")
    assert ppl < 1.01 * fp32 and kl < 1e-3, (ppl, fp32, kl)


def test_pruning_sparsity_patterns_and_recovery_keeps_the_zeros(tiny):
    lm, windows, _, _ = tiny
    for method in ("magnitude", "wanda"):
        model = load(lm.source).model
        prune_model(model, PruneConfig(method, 0.5), windows)
        assert sparsity_of(model) == pytest.approx(0.5, abs=1e-3)
    model = load(lm.source).model
    masks = prune_model(model, PruneConfig("wanda", pattern="2:4"), windows)
    before = kl_and_ppl(model, tiny)[1]
    losses = recover(model, masks, windows, steps=12, lr=3e-4)
    after = kl_and_ppl(model, tiny)[1]
    for name, mask in masks.items():
        w = model.get_submodule(name).weight
        assert (w[~mask] == 0).all(), name
        assert (w != 0).reshape(w.shape[0], -1, 4).sum(-1).le(2).all(), name
    assert losses[-1] < losses[0] and after < before, (losses[0], losses[-1], before, after)


def test_smoothquant_shares_one_scale_per_input_and_prepare_for_inference_fuses_it(tiny):
    """q/k/v (and gate/up) read one input: they get one smoothing scale, as the reference folds it into their norm,
    so prepare_for_inference fuses them into one W8A8 projection that computes what the separate layers did."""
    from lmforge.model.inference import prepare_for_inference

    lm, windows, heldout, _ = tiny
    model = quantize_calibrated(load(lm.source).model, QuantConfig(bits=8, method="smoothquant"), windows)
    attn, mlp = model.layers[0].attn, model.layers[0].mlp
    assert torch.equal(attn.q_proj.input_scale, attn.k_proj.input_scale)
    assert torch.equal(attn.q_proj.input_scale, attn.v_proj.input_scale)
    assert torch.equal(mlp.gate_proj.input_scale, mlp.up_proj.input_scale)
    assert not torch.equal(attn.q_proj.input_scale, attn.o_proj.input_scale)
    with torch.no_grad():
        before = model(heldout[:2])
        counts = prepare_for_inference(model, kernels=False)  # the fusion alone (the kernels round differently)
        after = model(heldout[:2])
    assert counts["fused_projections"] == 2 * len(model.layers)
    assert isinstance(model.layers[0].attn.qkv_proj, W8A8Linear)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
