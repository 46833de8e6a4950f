"""The parametric scaling law L(N, D) = E + A/N^alpha + B/D^beta fitted as in Chinchilla's approach 3
(Hoffmann et al. 2022): Huber loss (delta 1e-3) of log-loss residuals under the LSE parametrisation
log L = LSE(a - alpha log N, b - beta log D, e), with A = e^a, B = e^b, E = e^e, L-BFGS from a grid of starts;
then the iso-FLOP minima under C = 6 N D and the compute-optimal N_opt(C), D_opt(C).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from lmforge.common.errors import LmforgeError

# Chinchilla's initialisation grid (alpha, beta in 0..2, e in -1..1, a, b in 0..25).
GRID = {"alpha": (0.0, 0.5, 1.0, 1.5, 2.0), "beta": (0.0, 0.5, 1.0, 1.5, 2.0), "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
        "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0), "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)}


@dataclass(frozen=True)
class ScalingLaw:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float = 0.0  # the Huber objective at the optimum

    def loss(self, n, d):
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    def optimal_n(self, flops: float, points: int = 4001) -> float:
        """N minimising L(N, C / 6N): a dense search in log N, refined by a golden-section search."""
        lo, hi = math.log(flops / 6) - 60, math.log(flops / 6) + 60  # any N in [e^-60, e^60] * C/6
        grid = np.linspace(lo, hi, points)
        values = self._iso_loss(grid, flops)
        i = int(np.argmin(values))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, points - 1)]
        ratio = (math.sqrt(5) - 1) / 2
        for _ in range(200):
            m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
            if self._iso_loss(np.array([m1]), flops)[0] < self._iso_loss(np.array([m2]), flops)[0]:
                hi = m2
            else:
                lo = m1
        return math.exp((lo + hi) / 2)

    def _iso_loss(self, log_n: np.ndarray, flops: float) -> np.ndarray:
        log_d = math.log(flops / 6) - log_n
        return self.A * np.exp(-self.alpha * log_n) + self.B * np.exp(-self.beta * log_d)

    def compute_optimal(self, flops: float) -> dict:
        """The iso-FLOP minimum at C = flops: N_opt, D_opt = C / 6 N_opt, tokens per parameter, the loss."""
        n = self.optimal_n(flops)
        d = flops / (6 * n)
        return {"flops": flops, "n_opt": n, "d_opt": d, "tokens_per_param": d / n, "loss": float(self.loss(n, d))}

    def to_dict(self) -> dict:
        return asdict(self)


def _objective(theta: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor, log_l: torch.Tensor,
               delta: float) -> torch.Tensor:
    """theta = [a, b, e, alpha, beta] (batched over leading dims): summed Huber loss of the log residuals."""
    a, b, e, alpha, beta = theta.unbind(-1)
    terms = torch.stack(torch.broadcast_tensors(a[..., None] - alpha[..., None] * log_n,
                                                b[..., None] - beta[..., None] * log_d, e[..., None]), dim=-1)
    residual = torch.logsumexp(terms, dim=-1) - log_l
    return torch.nn.functional.huber_loss(residual, torch.zeros_like(residual), delta=delta,
                                          reduction="none").sum(-1)


def fit_scaling_law(n, d, loss, *, delta: float = 1e-3, starts: int = 16, max_iter: int = 1000) -> ScalingLaw:
    """Fit (E, A, B, alpha, beta) to runs of N parameters trained on D tokens reaching `loss`.

    The Huber objective is evaluated at every point of Chinchilla's grid; L-BFGS then runs from the `starts`
    best grid points (the full grid of 4,500 starts is that with starts=0) and the lowest optimum wins.
    """
    n, d, loss = (np.asarray(x, dtype=float).ravel() for x in (n, d, loss))
    if not n.size == d.size == loss.size:
        raise LmforgeError(f"n, d and loss must have the same length, got {n.size}, {d.size}, {loss.size}")
    if n.size < 5:
        raise LmforgeError(f"the law has 5 parameters; fitting needs at least 5 runs, got {n.size}")
    if (n <= 0).any() or (d <= 0).any() or (loss <= 0).any():
        raise LmforgeError("n, d and loss must all be > 0")
    log_n, log_d, log_l = (torch.tensor(np.log(x), dtype=torch.float64) for x in (n, d, loss))
    grid = torch.tensor(list(itertools.product(GRID["a"], GRID["b"], GRID["e"], GRID["alpha"], GRID["beta"])),
                        dtype=torch.float64)
    values = _objective(grid, log_n, log_d, log_l, delta)
    order = torch.argsort(values)
    inits = grid[order] if starts <= 0 else grid[order[:starts]]
    best_value, best = math.inf, None
    for init in inits:
        theta, value = _lbfgs(init, log_n, log_d, log_l, delta, max_iter)
        if math.isfinite(value) and value < best_value:
            best_value, best = value, theta
    if best is None:
        raise LmforgeError("the scaling-law fit did not converge from any start")
    a, b, e, alpha, beta = best.tolist()
    return ScalingLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta, objective=best_value)


def _lbfgs(init: torch.Tensor, log_n, log_d, log_l, delta: float, max_iter: int) -> tuple[torch.Tensor, float]:
    theta = init.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = _objective(theta, log_n, log_d, log_l, delta)
        value.backward()
        return value

    opt.step(closure)
    with torch.no_grad():
        return theta.detach().clone(), float(_objective(theta, log_n, log_d, log_l, delta))
