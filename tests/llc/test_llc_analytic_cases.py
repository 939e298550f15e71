"""The estimator against analytic learning coefficients (REFERENCE.md §1.6), within 10%.

16 chains (cheap: they advance together) because small LLCs are noisy: a draw of nbeta*K has
relative sd ~ 1/sqrt(lambda), so lambda = 1/4 needs a total ESS of ~1600 for a 5% standard error.
Settings are not tuned per case: every case runs :func:`calibrate_llc` with the same base settings
(below) and default grids, then one estimate with the calibrated settings and a fresh seed.
Burn-in and draws come from calibrate_llc's relaxation rule (burn-in 3 tau, draws 5 tau, tau =
2/(eps*gamma)), with its default cap of 4x the base 500 + 1000 steps; the weak localization here
(delta = 0.03) gives tau = 1,000-175,000 steps, so the cap (6,000 steps) binds in every case.
w* is the exact minimiser of the sample loss (see llc_analytic_models), full-batch SGLD, and
nbeta = n/log n with n = 1000 (144.8).
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from devinterp.llc import calibrate_llc, estimate_llc, rrr_learning_coefficient
from llc_analytic_models import (
    Potential, half_mse, monomial_problem, regression_problem, rrr_problem, sum_of_powers_loss,
)

pytestmark = pytest.mark.slow

BASE = dict(chains=16, burnin=500, draws=1000, batch_size=1000, init_loss_batches=1)
RTOL = 0.10


def _measure(model, data, loss_fn, **kw):
    # no fallback to strong localization: it would bias the values the tests compare with theory
    settings = calibrate_llc(model, data, loss_fn, fallback_deltas=(), **BASE, **kw)
    res = estimate_llc(model, data, loss_fn, settings=settings, seed=12345, **kw)
    return settings, res


def _check(res, truth, settings):
    msg = f"{res} truth={float(truth):.4g} chosen: {settings.choice}"
    print(msg)
    assert res.healthy, msg
    assert res.llc == pytest.approx(float(truth), rel=RTOL), msg


# (5,3,5,0) (multiplicity 2) mixes slowly along its flat valleys: with 500 + 1000 steps no epsilon
# passed split R-hat; the relaxation rule's longer chains (capped at 6,000 steps) pass it, measured
# 5.97 +- 0.10 (-8%): still relaxing (tau = 31,000 steps; 6.24-6.42 after 16,000), so near the tolerance.
@pytest.mark.parametrize("shape", [(5, 3, 5, 0), (5, 4, 5, 0), (4, 3, 8, 0), (8, 3, 4, 0), (3, 8, 4, 0), (3, 2, 10, 1)])
def test_reduced_rank_regression(shape):
    model, data = rrr_problem(*shape)
    settings, res = _measure(model, data, half_mse)
    _check(res, rrr_learning_coefficient(*shape), settings)


# m = 1 cases only: with multiplicity m > 1 the finite-nbeta value sits below lambda by about
# (m-1)/log(nbeta) (measured here: (1,1), lambda 1/2, m 2, gave 0.29 at nbeta 145), which is a
# property of the target, not of the sampler; m > 1 cases are covered by the ordinality test.
@pytest.mark.parametrize("powers, truth", [
    ((0, 1), Fraction(1, 2)), ((0, 2), Fraction(1, 4)), ((0, 3), Fraction(1, 6)),
    # (1,2): w1 is flat where w2 = 0, so it relaxes with tau = 2/(eps*gamma) ~ 3,100 steps; with 500
    # burn-in steps it measured 0.205 (-18%), with the relaxation rule's 2,247 + 3,752 0.243 +- 0.014
    # (exact finite-nbeta target 0.234, localized_monomial_llc; BENCHMARKS.md).
    ((1, 2), Fraction(1, 4)),
])
def test_normal_crossing(powers, truth):
    model, data = monomial_problem(powers)
    settings, res = _measure(model, data, half_mse)
    _check(res, truth, settings)


def test_sum_of_powers_potential():
    # K = w1^2 + w2^4: lambda = 1/2 + 1/4; the loss ignores the data, n is given
    powers = (1, 2)
    settings, res = _measure(Potential(2), [None], sum_of_powers_loss(powers), n=1000)
    _check(res, Fraction(3, 4), settings)


def test_regular_model_and_frozen_parameters():
    model, data = regression_problem(4, 3, bias=True)  # d = 15
    settings, res = _measure(model, data, half_mse)
    _check(res, Fraction(15, 2), settings)
    # freeze the bias (3) and one weight row (4): (15 - 7)/2 sampled
    # the restricted posterior is another sampling problem, so it is calibrated like any other
    mask = {"weight": torch.tensor([[True] * 4, [True] * 4, [False] * 4])}
    r_settings, restricted = _measure(model, data, half_mse, param_mask=mask)
    assert restricted.d_sampled == 8
    # frozen coordinates drop out: 8/2, not 15/2 (with 500 + 1000 steps this was flagged "rising")
    _check(restricted, 4, r_settings)
    assert restricted.llc < res.llc - 5 * (restricted.stderr + res.stderr)


def test_ordinality_more_singular_point_has_smaller_llc():
    # x*w1*w2^2 (lambda 1/4) is more degenerate than x*w1*w2 (lambda 1/2); one calibration at both points
    model_a, data = monomial_problem((1, 1))
    model_b, _ = monomial_problem((2, 2))
    settings = calibrate_llc([model_a, model_b], data, half_mse, fallback_deltas=(), **BASE)
    a = estimate_llc(model_a, data, half_mse, settings=settings, seed=7)
    b = estimate_llc(model_b, data, half_mse, settings=settings, seed=7)
    assert b.llc + 2 * b.stderr < a.llc - 2 * a.stderr, (a, b)
