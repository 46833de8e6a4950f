"""AWQ, GPTQ, SmoothQuant and Wanda / 2:4 on single layers, against independent references: the closed-form output
error ||X (W - W_q)^T||^2, round-to-nearest on the same grid, an integer matmul in int64, and metric rankings."""

import pytest
import torch
from torch import nn

from lmforge.quant.awq import ScaledInputLinear, awq_linear, output_error, search_scale
from lmforge.quant.calibration import LinearStats
from lmforge.quant.gptq import gptq_quantize
from lmforge.quant.group_grid import codes, dequantize_groups, grid, quantize_groups, values
from lmforge.quant.int_linear import Int4Linear
from lmforge.quant.prune import PruneConfig, n_m_mask, prune_mask
from lmforge.quant.smoothquant import W8A8Linear, quantize_per_row


def correlated_inputs(n=4096, k=128, seed=0):
    """Inputs whose channels are strongly correlated (a low-rank mix plus a little noise), as real activations are."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k // 8, generator=g)
    return z @ torch.randn(k // 8, k, generator=g) + 0.1 * torch.randn(n, k, generator=g)


def stats_of(x):
    stats = LinearStats(x.shape[1])
    stats.add(x)
    return stats


def err(x, w, w_hat):
    return float(((x @ (w - w_hat).T) ** 2).sum())


@pytest.mark.parametrize("bits", [4, 3])
def test_gptq_reconstruction_error_is_below_rtn_with_correlated_inputs(bits):
    x, w = correlated_inputs(), torch.randn(64, 128)
    rtn = dequantize_groups(*quantize_groups(w, bits, 32))
    q, scales, zeros = gptq_quantize(w, stats_of(x).hessian(), bits, 32)
    assert q.max() <= 2**bits - 1
    gptq = dequantize_groups(q, scales, zeros)
    assert err(x, w, gptq) < 0.5 * err(x, w, rtn), (err(x, w, gptq), err(x, w, rtn))


def test_gptq_with_uncorrelated_inputs_is_rtn():
    """A diagonal Hessian has nothing to compensate with: every column rounds to nearest, GPTQ == RTN exactly."""
    w = torch.randn(16, 64)
    q, scales, zeros = gptq_quantize(w, torch.diag(torch.rand(64) + 0.5), 4, 32)
    q_rtn, scales_rtn, zeros_rtn = quantize_groups(w, 4, 32)
    assert torch.equal(q, q_rtn) and torch.equal(scales, scales_rtn) and torch.equal(zeros, zeros_rtn)


def outlier_inputs(n=2048, k=128, seed=0):
    """Activations where 4 input channels are 30x larger than the rest (the LLM outlier channels AWQ protects)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g)
    x[:, [3, 40, 77, 100]] *= 30
    return x


@pytest.mark.usefixtures("weight_only_activations")  # the layer against its dequantized weight
def test_awq_scales_up_the_channels_with_large_activations_and_beats_rtn():
    x, w = outlier_inputs(), torch.randn(48, 128)
    stats = stats_of(x)
    s, alpha, errors = search_scale(w, stats, 3, 32)
    assert alpha > 0 and not torch.allclose(s, torch.ones_like(s))
    assert s[[3, 40, 77, 100]].min() > s.median() * 1.3  # the outlier channels get the large scales
    rtn = dequantize_groups(*quantize_groups(w, 3, 32))
    assert errors[0] == pytest.approx(output_error(w - rtn, stats.gram.float()), rel=1e-4)  # alpha = 0 is RTN
    layer = nn.Linear(128, 48, bias=False)
    layer.weight.data.copy_(w)
    awq = awq_linear(layer, stats, 3, 32)
    assert isinstance(awq, ScaledInputLinear) and awq.alpha == alpha
    assert err(x, w, awq.dequantize()) < 0.7 * err(x, w, rtn)
    y = awq(x[:8])
    torch.testing.assert_close(y, x[:8] @ awq.dequantize().T, rtol=3e-2, atol=0.5)


def test_awq_without_outliers_keeps_rtn_when_nothing_helps():
    """alpha = 0 (s = 1) is a candidate, so the search's error is never above RTN's."""
    x, w = torch.randn(1024, 64), torch.randn(16, 64)
    stats = stats_of(x)
    _, _, errors = search_scale(w, stats, 4, 32)
    assert min(errors) <= errors[0]


@pytest.mark.usefixtures("weight_only_activations")
def test_int3_codes_run_through_the_int4_kernel():
    w, x = torch.randn(48, 128), torch.randn(5, 128)
    q, scales, zeros = quantize_groups(w, 3, 64)
    assert q.max() <= 7
    module = Int4Linear.from_codes(q, scales, zeros, 64)
    torch.testing.assert_close(module.dequantize(), dequantize_groups(q, scales, zeros))
    expected = x.bfloat16().double() @ dequantize_groups(q, scales, zeros).double().T
    torch.testing.assert_close(module(x).double(), expected, rtol=2e-2, atol=3e-2)


def test_w8a8_is_an_exact_int8_matmul_and_smoothing_reduces_its_error():
    x, layer = outlier_inputs(n=512, k=128), nn.Linear(128, 64)
    stats = stats_of(x)
    smooth, plain = W8A8Linear.from_linear(layer, stats), W8A8Linear.from_linear(layer, None)
    y = smooth(x)
    # independent integer reference: quantize x / s per token, multiply in int64, rescale
    q, sx = quantize_per_row(x * smooth.input_scale)
    expected = (q.long() @ smooth.weight.long().T).double() * sx.double()[:, None] * smooth.weight_scales.double()
    torch.testing.assert_close(y.double(), expected + layer.bias.double(), rtol=1e-5, atol=1e-4)
    reference = layer(x).detach()
    smooth_err = float(((y - reference) ** 2).mean())
    plain_err = float(((plain(x) - reference) ** 2).mean())
    assert smooth_err < 0.5 * plain_err, (smooth_err, plain_err)
    assert smooth_err < 1e-3 * float((reference ** 2).mean())


def test_wanda_keeps_the_weights_with_large_weight_times_input_norm():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 64, generator=g)
    x = torch.randn(512, 64, generator=g) * torch.linspace(0.05, 5, 64)  # input norms differ 100x across channels
    norms = stats_of(x).column_norms
    keep = prune_mask(w, PruneConfig("wanda", 0.5), norms)
    metric = w.abs() * x.norm(dim=0)
    expected = torch.zeros_like(keep).scatter_(1, metric.topk(32, dim=1).indices, True)  # top half of each row
    assert keep.sum(dim=1).eq(32).all()
    assert torch.equal(keep, expected)
    magnitude = prune_mask(w, PruneConfig("magnitude", 0.5))
    assert not torch.equal(keep, magnitude)
    # Wanda's choice loses less of the layer's output than magnitude's, on the inputs it measured
    assert err(x, w, w * keep) < err(x, w, w * magnitude)


def test_two_four_masks_keep_exactly_two_of_every_four():
    metric = torch.rand(16, 64)
    keep = n_m_mask(metric, 2, 4)
    groups = keep.reshape(16, 16, 4)
    assert groups.sum(-1).eq(2).all()
    kept_min = torch.where(groups, metric.reshape(16, 16, 4), torch.inf).amin(-1)
    dropped_max = torch.where(~groups, metric.reshape(16, 16, 4), -torch.inf).amax(-1)
    assert (kept_min >= dropped_max).all()  # the two kept are the two largest


def obq_reference(w, hessian, bits, group_size, damp=0.01):
    """GPTQ as the paper's sequential Optimal Brain Quantization, in float64, without the Cholesky factor or the lazy
    block updates: quantize column j on its group's grid (fixed from the group's columns as they stand when its first
    column is reached), spread the error over the later columns with row j of H^-1, then remove column j from H^-1 by
    one step of Gaussian elimination (OBS's H^-1 update)."""
    W = w.double().clone()
    H = hessian.double().clone()
    H.diagonal().add_(damp * H.diagonal().mean())
    Hinv = torch.linalg.inv(H)
    Q = torch.zeros_like(W)
    for j in range(W.shape[1]):
        if j % group_size == 0:
            scales, zeros = grid(W[:, j:j + group_size], bits)
        Q[:, j] = values(codes(W[:, j:j + 1], scales, zeros, bits), scales, zeros)[:, 0].double()
        e = (W[:, j] - Q[:, j]) / Hinv[j, j]
        W[:, j + 1:] -= e[:, None] * Hinv[j, j + 1:][None, :]
        Hinv = Hinv - Hinv[:, j:j + 1] @ Hinv[j:j + 1, :] / Hinv[j, j]
    return Q.float()


@pytest.mark.parametrize("bits", [4, 3])
def test_gptq_equals_sequential_obq_and_its_lazy_blocks_are_exact(bits):
    """The Cholesky form with lazy batched updates (block 128, and block 16 across group boundaries) picks the same
    codes as the plain sequential algorithm with explicit inverse-Hessian downdates."""
    x, w = correlated_inputs(n=2048, k=64), torch.randn(24, 64)
    hessian = stats_of(x).hessian()
    reference = obq_reference(w, hessian, bits, 32)
    for block_size in (128, 16):
        gptq = dequantize_groups(*gptq_quantize(w, hessian, bits, 32, block_size=block_size))
        same = (gptq - reference).abs() < 1e-4
        assert same.float().mean() >= 0.999, (block_size, float(same.float().mean()))
        assert err(x, w, gptq) == pytest.approx(err(x, w, reference), rel=1e-3)


@pytest.mark.parametrize("bits", [4, 3])
def test_awq_layer_output_error_is_at_most_rtn_on_its_calibration_inputs(bits):
    """The whole AWQ layer (scale search, then clip search, as quantized codes): its output error on the calibration
    inputs is never above RTN's, since s = 1 and no clipping are candidates; with outlier channels it is well below."""
    layer = nn.Linear(128, 32, bias=False)
    w = layer.weight.detach()
    rtn = dequantize_groups(*quantize_groups(w, bits, 32))
    for x in (correlated_inputs(n=1024, k=128), outlier_inputs(n=1024, k=128)):
        awq = awq_linear(layer, stats_of(x), bits, 32).dequantize()
        assert err(x, w, awq) <= err(x, w, rtn) * 1.0001
    assert err(x, w, awq) < 0.8 * err(x, w, rtn)


def test_bytes_read_per_token_counts_the_w8a8_codes_and_scales():
    """A W8A8 layer's weight is an int8 buffer, not a parameter: the decode benchmark's byte count reads it too."""
    from lmforge.generation.decode_bench import bytes_read_per_token

    layer = W8A8Linear.from_linear(nn.Linear(128, 64), None)
    assert bytes_read_per_token(nn.Sequential(layer)) == 64 * 128 + 4 * (64 + 128 + 64)
