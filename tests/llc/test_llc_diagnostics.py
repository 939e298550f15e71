"""Diagnostics: the statistics on series with known answers, and the checks firing on real failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from devinterp.llc import diagnose, ess, estimate_llc, split_rhat, trend_z
from llc_analytic_models import half_mse, off_minimum_regression, regression_problem


def _ar1(rho, n, seed):
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = rng.normal() / np.sqrt(1 - rho**2)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + rng.normal()
    return x


def test_ess_matches_ar1_theory():
    # ESS of AR(1) = n (1 - rho) / (1 + rho)
    iid = np.mean([ess(_ar1(0.0, 4000, s)) for s in range(5)])
    assert iid == pytest.approx(4000, rel=0.15)
    corr = np.mean([ess(_ar1(0.8, 4000, s)) for s in range(5)])
    assert corr == pytest.approx(4000 * 0.2 / 1.8, rel=0.25)


def test_rhat_and_trend():
    rng = np.random.default_rng(0)
    mixed = rng.normal(size=(4, 500))
    assert split_rhat(mixed) < 1.02
    assert split_rhat(mixed + np.arange(4)[:, None]) > 1.5
    z, _ = trend_z(mixed)
    assert abs(z) < 3
    z, delta = trend_z(mixed + np.linspace(0, 3, 500))
    assert z > 3 and delta > 0


def test_diagnose_flags():
    rng = np.random.default_rng(1)
    trace = 1.02 + 0.01 * rng.normal(size=(4, 300))  # LLC = 2
    kw = dict(init_loss=1.0, init_loss_stderr=0.0, nbeta=100.0, d_sampled=10)
    llcs = 100 * (trace.mean(1) - 1.0)
    ok = diagnose(trace, llcs, llc=llcs.mean(), stderr=llcs.std(ddof=1) / 2, **kw)
    assert ok.healthy, ok.reasons
    low = trace - 0.07  # far below the init loss
    llcs = 100 * (low.mean(1) - 1.0)
    bad = diagnose(low, llcs, llc=llcs.mean(), stderr=llcs.std(ddof=1) / 2, **kw)
    assert [r.split(":")[0] for r in bad.reasons] == ["negative"]
    nan = trace.copy()
    nan[2, 50:] = np.nan
    assert diagnose(nan, llcs, llc=np.nan, stderr=np.nan, **kw).reasons[0].startswith("nonfinite")


def test_too_large_epsilon_is_unhealthy():
    model, data = regression_problem(3, 2)
    kw = dict(chains=3, burnin=50, draws=100, batch_size=1000, gamma=1.0)
    assert estimate_llc(model, data, half_mse, epsilon=1e-3, **kw).healthy
    hot = estimate_llc(model, data, half_mse, epsilon=0.05, **kw)  # eps*nbeta*curvature > 4: unstable
    assert not hot.healthy
    assert {r.split(":")[0] for r in hot.reasons} & {"nonfinite", "runaway"}


def test_not_a_minimum_is_flagged():
    model, data = regression_problem(3, 2)
    with torch.no_grad():
        model.weight.add_(0.2)
    r = estimate_llc(model, data, half_mse, chains=3, burnin=50, draws=100, batch_size=1000, epsilon=1e-3, gamma=1.0)
    assert not r.healthy
    assert "negative" in {x.split(":")[0] for x in r.reasons}


def test_calibration_falls_back_to_stronger_localization_and_says_so():
    """K = w1^2 - w2^4 at w* = 0: along w2 the tempered density exp(nbeta w2^4 - gamma w2^2 / 2) has a
    barrier of height gamma^2 / (16 nbeta) only, so weak localization (delta <= 0.25, gamma <= 3 at
    nbeta 144.8: barrier < 0.004) lets the chains run away, and only the fallback grid (delta >= 1)
    can hold them. Without the fallback, calibration must fail and say what it tried."""
    import math

    from devinterp.llc import CalibrationError, calibrate_llc
    from llc_analytic_models import Potential

    def loss(model, batch):
        return model.w[0] ** 2 - model.w[1] ** 4

    kw = dict(n=1000, chains=4, burnin=100, draws=300, batch_size=1, init_loss_batches=1,
              epsilons=[1e-2, 1e-3, 3e-4, 1e-4, 1e-5])
    chosen = calibrate_llc(Potential(2), [None], loss, **kw)
    assert chosen.gamma / math.sqrt(1000 / math.log(1000)) > 0.25  # nbeta = n / log n
    assert "biases the absolute LLC low" in chosen.choice
    with pytest.raises(CalibrationError, match="gammas"):
        calibrate_llc(Potential(2), [None], loss, fallback_deltas=(), **kw)


def test_calibration_rejects_a_gamma_whose_chains_forget_w_star():
    """Two basins of depth 0.3 and 0.5 (L_n(w*) 0.7 and 0.5) in a 200-dimensional plateau at 1: at
    nbeta = 144.8 a basin holds the chains only when d / (nbeta * depth + gamma) < 1, i.e. gamma above
    ~128-157. Below that every trace is stationary and healthy, but both chains sit on the plateau
    (mean loss 1 at both models): the locality check must reject those gammas and the choice must
    be a gamma where the chains' mean loss follows L_n(w*)."""
    import math

    from devinterp.llc import calibrate_llc
    from llc_analytic_models import GaussianWell, gaussian_well_loss

    d, nbeta = 200, 1000 / math.log(1000)
    models = [GaussianWell(d, 0.3), GaussianWell(d, 0.5)]
    chosen = calibrate_llc(models, [None], gaussian_well_loss, n=1000, chains=4, burnin=100, draws=200,
                           batch_size=1, init_loss_batches=1, epsilons=[1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4])
    rejected = [r for r in chosen.table if str(r["reasons"]).startswith("rejected")]
    assert rejected and all("locality slope" in r["reasons"] for r in rejected)
    # the basin cannot hold where E|w|^2 = d / (nbeta * depth + gamma) > 2 for the deeper basin
    assert all(d / (nbeta * 0.5 + r["gamma"]) > 1 for r in rejected)
    assert d / (nbeta * 0.5 + chosen.gamma) < 2
    assert "posterior local across the probes" in chosen.choice
    a, b = (estimate_llc(m, [None], gaussian_well_loss, settings=chosen, n=1000) for m in models)
    slope = ((a.init_loss + a.llc / a.nbeta) - (b.init_loss + b.llc / b.nbeta)) / (a.init_loss - b.init_loss)
    assert slope > 0.5, slope


def test_a_calibration_that_fails_on_locality_names_the_strongest_candidate_and_why():
    """Without the fallback grid the wells' chains forget w* at every gamma tried (previous test): the
    error must name the strongest candidate that failed only the locality check, with the settings
    that would fix it, and explain the ambiguity of that check."""
    import math

    from devinterp.llc import CalibrationError, calibrate_llc
    from llc_analytic_models import GaussianWell, gaussian_well_loss

    models = [GaussianWell(200, 0.3), GaussianWell(200, 0.5)]
    with pytest.raises(CalibrationError) as err:
        calibrate_llc(models, [None], gaussian_well_loss, n=1000, chains=4, burnin=100, draws=200, batch_size=1,
                      init_loss_batches=1, epsilons=[1e-1, 3e-2, 1e-2, 3e-3, 1e-3], fallback_deltas=())
    rejected = [r for r in err.value.table if str(r["reasons"]).startswith("rejected")]
    assert rejected
    strongest = max(rejected, key=lambda r: r["gamma"])
    text = str(err.value)
    assert f"failed only the locality check: epsilon={strongest['epsilon']:.4g}, gamma={strongest['gamma']:.6g}" in text
    assert "locality slope 0.00" in text  # the pair's verdict, so the user can judge it
    assert f"burnin={strongest['burnin']}, draws={strongest['draws']}" in text
    assert "calibrate: off" in text and "steep real LLC rise" in text
    assert math.isclose(strongest["gamma"] / math.sqrt(1000 / math.log(1000)), 0.25, rel_tol=1e-6)


def test_calibration_search_shortcuts_change_nothing_they_skip():
    """Two shortcuts of the gamma search, checked on the Gaussian wells plus a hill (depth -0.5: w* is a
    maximum, L_n(w*) 1.5, the highest, so it would run first at every candidate):
    (1) at a larger gamma, epsilons above the largest that passed the screen at a smaller gamma are
        skipped; rerunning those screens here must fail them (a stronger localization only stiffens
        the posterior), so the choice is the one the full scan would make;
    (2) the hill, off a minimum at the first candidate, goes last afterwards: it is not run for the
        candidates rejected on locality, and is run (and left out) at the chosen one."""
    import math

    from devinterp.llc import calibrate_llc
    from llc_analytic_models import GaussianWell, gaussian_well_loss

    d = 200
    models = [GaussianWell(d, -0.5), GaussianWell(d, 0.3), GaussianWell(d, 0.5)]
    kw = dict(n=1000, chains=4, burnin=100, draws=200, batch_size=1, init_loss_batches=1)
    eps_grid = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4]
    chosen = calibrate_llc(models, [None], gaussian_well_loss, epsilons=eps_grid, **kw)
    table = chosen.table
    ceilings = [r for r in table if str(r["reasons"]).startswith("skipped") and "passed the screen" in r["reasons"]]
    assert ceilings, "expected the search to skip epsilons above an earlier gamma's screen"
    for r in ceilings:
        ceiling = float(r["reasons"].split("above ")[1].split(",")[0])
        for eps in (e for e in eps_grid if e > ceiling * (1 + 1e-9)):
            screen = estimate_llc(models[-1], [None], gaussian_well_loss, epsilon=eps, gamma=r["gamma"],
                                  **{**kw, "burnin": 100, "draws": 100})
            ratio = screen.diagnostics.get("drift_noise_ratio", math.inf)
            assert not ratio <= 0.1 or any(x.startswith("nonfinite") for x in screen.reasons), (r["gamma"], eps, ratio)
    full = [r for r in table if r["model"] is not None and not str(r["reasons"]).startswith("screened")]
    candidates = list(dict.fromkeys((r["gamma"], r["epsilon"]) for r in full))
    hill_runs = [(r["gamma"], r["epsilon"]) for r in full if r["model"] == 0]
    assert hill_runs[0] == candidates[0] and hill_runs[-1] == (chosen.gamma, chosen.epsilon)
    assert len(candidates) > 2 and len(hill_runs) == 2  # not rerun at the rejected candidates in between
    assert all(str(r["reasons"]).startswith("not at a minimum") for r in full if r["model"] == 0)
    last = [r["model"] for r in full if (r["gamma"], r["epsilon"]) == (chosen.gamma, chosen.epsilon)]
    assert last[-1] == 0 and "(1 not at one, left out)" in chosen.choice
    assert chosen.gamma / math.sqrt(1000 / math.log(1000)) == pytest.approx(10)  # as without the hill (test above)


def test_bisection_over_the_fallback_grid_chooses_what_the_linear_scan_chooses():
    """Wells in 400 dimensions: the basins hold the chains only from delta ~ 27 (E|w|^2 = d / (nbeta *
    depth + gamma) < 1 for the deeper one), and at delta 30 the chains, capped at 4x the configured
    length, still mix too slowly; the linear scan over every delta (given as ``gammas``) tries all
    of them up to 100. The bisection of the fallback grid (the default) tries 10, 30, 100 and must
    choose the same (gamma, epsilon) with fewer full-length runs, and say which deltas it skipped."""
    import math

    from devinterp.llc import calibrate_llc
    from devinterp.sweep.calibration import calibration_summary
    from llc_analytic_models import GaussianWell, gaussian_well_loss

    d, nbeta = 400, 1000 / math.log(1000)
    models = [GaussianWell(d, 0.3), GaussianWell(d, 0.5)]
    kw = dict(n=1000, chains=4, burnin=100, draws=200, batch_size=1, init_loss_batches=1,
              epsilons=[1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5])
    deltas = (0.03, 0.1, 0.25, 1, 3, 10, 30, 100)
    linear = calibrate_llc(models, [None], gaussian_well_loss, gammas=[x * math.sqrt(nbeta) for x in deltas],
                           max_delta=100, **kw)
    bisected = calibrate_llc(models, [None], gaussian_well_loss, **kw)
    assert (bisected.gamma, bisected.epsilon) == pytest.approx((linear.gamma, linear.epsilon))
    assert bisected.gamma / math.sqrt(nbeta) == pytest.approx(100)

    def full_runs(table):
        return sum(r["model"] is not None and not str(r["reasons"]).startswith("screened") for r in table)

    def tried(table):
        return sorted({round(r["delta"], 6) for r in table if r["delta"] is not None and r["model"] is not None})

    assert tried(bisected.table) == [0.03, 0.1, 0.25, 10, 30, 100] and tried(linear.table) == list(deltas)
    assert full_runs(bisected.table) < full_runs(linear.table)
    assert "fallback deltas tried by bisection: 10, 30, 100" in bisected.choice
    lines = calibration_summary({"calibration": bisected.table, "settings": bisected.model_dump()})
    assert "skipped: delta 1, 3 of the fallback grid (bisection: a weaker localization cannot pass where delta 30 failed)" in lines


def test_calibration_leaves_out_models_that_are_not_at_a_minimum():
    """A probed model off its minimum (like step 0 of a run) descends under SGLD at every step size:
    it is recorded as 'not at a minimum' and left out of the choice; alone it cannot calibrate."""
    from devinterp.llc import CalibrationError, calibrate_llc

    off, at_min, data = off_minimum_regression()
    kw = dict(chains=4, burnin=300, draws=600, batch_size=1000, init_loss_batches=1,
              epsilons=[2.5e-4, 2e-4, 1.5e-4], fallback_deltas=())
    chosen = calibrate_llc([off, at_min], data, half_mse, **kw)
    left_out = [r for r in chosen.table if r["model"] == 0 and str(r["reasons"]).startswith("not at a minimum")]
    assert left_out and all(r["passed"] is None and r["llc"] < 0 for r in left_out)
    assert "not at one, left out" in chosen.choice
    with pytest.raises(CalibrationError):
        calibrate_llc([off], data, half_mse, **kw)
