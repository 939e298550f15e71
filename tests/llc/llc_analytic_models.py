"""Models with known learning coefficients (REFERENCE.md §1.6), built so that w* is the exact
minimiser of the *sample* loss (REFERENCE.md §1.5 "Measured here"): the noise in y is projected
off the span of x, so the least-squares fit of the true map is exact and the excess loss is
exactly the analytic K(w)."""

from __future__ import annotations

import torch
from torch import nn

N_SAMPLES = 1000


def _project_off(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """e minus its least-squares projection on the columns of x (so x^T e = 0 exactly)."""
    x64, e64 = x.double(), e.double()
    return (e64 - x64 @ torch.linalg.lstsq(x64, e64).solution).float()


def half_mse(model: nn.Module, batch) -> torch.Tensor:
    """Gaussian negative log-likelihood up to a constant: 0.5 * mean ||y - f(x)||^2 (nats)."""
    x, y = batch
    return 0.5 * ((model(x) - y) ** 2).sum(-1).mean()


class RRR(nn.Module):
    """y = B A x; A [H, M], B [N, H]."""

    def __init__(self, M: int, H: int, N: int):
        super().__init__()
        self.A = nn.Parameter(torch.zeros(H, M))
        self.B = nn.Parameter(torch.zeros(N, H))

    def forward(self, x):
        return x @ self.A.T @ self.B.T


def rrr_problem(M: int, H: int, N: int, r: int, seed: int = 0, n: int = N_SAMPLES):
    """(model at w*, data [(x, y)]): true map B*A* of rank r, y = B*A* x + noise with x^T noise = 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, M, generator=g)
    noise = _project_off(x, torch.randn(n, N, generator=g))
    model = RRR(M, H, N)
    with torch.no_grad():
        if r:
            a = torch.randn(H, M, generator=g)
            a[r:] = 0  # rank r product
            model.A.copy_(a)
            model.B.copy_(torch.randn(N, H, generator=g))
        y = model(x) + noise
    return model, [(x, y)]


class Monomial(nn.Module):
    """f(x) = x * prod_i w_i^p_i (the reference library's test model): K = mean(x^2)/2 * prod w_i^(2 p_i)."""

    def __init__(self, powers):
        super().__init__()
        self.register_buffer("p", torch.tensor(powers, dtype=torch.float32))
        self.w = nn.Parameter(torch.zeros(len(powers)))

    def forward(self, x):
        return x * torch.prod(self.w ** self.p)


def monomial_problem(powers, seed: int = 0, n: int = N_SAMPLES):
    """x ~ N(0, 2^2), y = 0.25 N(0,1) projected off x, w* = 0 (the exact minimiser)."""
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, 1, generator=g)
    y = _project_off(x, 0.25 * torch.randn(n, 1, generator=g))
    return Monomial(powers), [(x, y)]


class Potential(nn.Module):
    """A parameter vector for a loss given directly as a function of w (loss_fn ignores the batch)."""

    def __init__(self, d: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d))


class GaussianWell(nn.Module):
    """A loss 1 - depth * exp(-|w|^2 / 2) over d weights at w* = 0 (L_n(w*) = 1 - depth): a basin of
    unit width in a flat plateau at 1, like a trained network's basin inside the chance-level
    plateau. Near w* it is regular (curvature ``depth``), so a posterior that stays in the basin
    has E|w|^2 = d / (nbeta * depth + gamma); where that exceeds 1 (the basin's width) the
    entropy of the plateau wins and the chains' loss goes to 1 whatever the depth."""

    def __init__(self, d: int, depth: float):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d))
        self.register_buffer("depth", torch.tensor(float(depth)))


def gaussian_well_loss(model, batch):
    return 1.0 - model.depth * torch.exp(-0.5 * (model.w ** 2).sum())


def sum_of_powers_loss(powers):
    """loss_fn(model, batch) = sum_i w_i^(2 k_i): lambda = sum_i 1/(2 k_i) (REFERENCE.md §1.6(b))."""
    def loss_fn(model, batch):
        return sum(model.w[i] ** (2 * k) for i, k in enumerate(powers))
    return loss_fn


def regression_problem(M: int, N: int, seed: int = 0, n: int = N_SAMPLES, bias: bool = False):
    """Full linear regression y = W x (+ b) at its least-squares fit: regular, lambda = d/2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, M, generator=g)
    y = torch.randn(n, N, generator=g)
    model = nn.Linear(M, N, bias=bias)
    xd = torch.cat([x, torch.ones(n, 1)], 1) if bias else x
    sol = torch.linalg.lstsq(xd.double(), y.double()).solution.T.float()
    with torch.no_grad():
        model.weight.copy_(sol[:, :M])
        if bias:
            model.bias.copy_(sol[:, M])
    return model, [(x, y)]


def off_minimum_regression(shift: float = 0.5):
    """(model off its minimum, the same regression at its least-squares fit, data): every weight of the
    first moved by ``shift``, so SGLD descends from it (like step 0 of a run; its LLC comes out negative)."""
    at_min, data = regression_problem(3, 2)
    off, _ = regression_problem(3, 2)
    with torch.no_grad():
        off.weight.add_(shift)
    return off, at_min, data
