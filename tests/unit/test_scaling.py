"""The Chinchilla approach-3 fit recovers a known law from synthetic losses, and the iso-FLOP minimum it derives
matches the closed form N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta))."""

import math

import numpy as np
import pytest

from lmforge.common.errors import LmforgeError
from lmforge.train.scaling_law import ScalingLaw, fit_scaling_law

CHINCHILLA = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def _synthetic(noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    n, d = (g.ravel() for g in np.meshgrid(np.logspace(7, 10, 6), np.logspace(9, 12, 6)))
    law = ScalingLaw(**CHINCHILLA)
    loss = law.loss(n, d) * np.exp(rng.normal(0, noise, n.size))
    return n, d, loss


@pytest.fixture(scope="module")
def fit():
    """36 runs (6 sizes x 6 budgets) of the law with 0.1% multiplicative noise on the loss."""
    return fit_scaling_law(*_synthetic(1e-3))


def test_fit_recovers_chinchilla_parameters(fit):
    print({k: round(getattr(fit, k), 4) for k in CHINCHILLA})
    for name, true in CHINCHILLA.items():
        assert abs(getattr(fit, name) / true - 1) < 0.05, (name, getattr(fit, name), true)
    assert abs(fit.E / CHINCHILLA["E"] - 1) < 0.01 and abs(fit.alpha / CHINCHILLA["alpha"] - 1) < 0.02


def test_compute_optimal_matches_closed_form(fit):
    g = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1 / (fit.alpha + fit.beta))
    a, b = fit.beta / (fit.alpha + fit.beta), fit.alpha / (fit.alpha + fit.beta)
    for flops in (1e18, 5.76e23, 1e26):
        opt = fit.compute_optimal(flops)
        n_closed, d_closed = g * (flops / 6) ** a, (flops / 6) ** b / g
        assert opt["n_opt"] == pytest.approx(n_closed, rel=1e-6)
        assert opt["d_opt"] == pytest.approx(d_closed, rel=1e-6)
        assert opt["tokens_per_param"] == pytest.approx(d_closed / n_closed, rel=1e-6)
        assert opt["tokens_per_param"] == pytest.approx(g ** -2 * (flops / 6) ** ((fit.alpha - fit.beta) /
                                                                                  (fit.alpha + fit.beta)), rel=1e-6)
    # Chinchilla's own law: G ~ 0.6 (fitted parameters within a few %); at Gopher's 5.76e23 FLOPs ~40B params
    true = ScalingLaw(**CHINCHILLA).compute_optimal(5.76e23)
    assert 2e10 < true["n_opt"] < 6e10 and math.isclose(fit.compute_optimal(5.76e23)["n_opt"], true["n_opt"],
                                                         rel_tol=0.15)


def test_fit_rejects_too_few_runs():
    with pytest.raises(LmforgeError, match="at least 5"):
        fit_scaling_law([1e6, 2e6], [1e8, 1e8], [3.0, 2.9])
