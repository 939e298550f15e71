"""Stage detection: detectors, classifier edges, short / constant / NaN inputs, bootstrap
determinism, the published LM curves, and the no-torch rule. Expected values come from the planted
truth or the published stage table (REFERENCE.md §2.1), never from a previous run of the code."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from devinterp.config import ConfigError
from devinterp.tables import STAGE_COLUMNS
from devinterp.transitions import (
    BadSegmentationParameters, classify_stage, critical_z, detect_stages, find_critical_points, fit_gp, fit_on_axis,
    noise_sd, segment, slope_profile,
)
from devinterp.transitions.synthetic import planted_sweep

REPO = Path(__file__).resolve().parents[2]
HOOGLAND = Path(os.environ.get("DEVINTERP_SHARED_DATA", REPO.parent / "shared" / "data")) / "hoogland2024-lm" / "metrics.csv"


def _index(steps, found_steps):
    where = {int(s): i for i, s in enumerate(steps)}
    return [where[int(s)] for s in found_steps]


def _ramp(u):
    return 0.5 * (1 - np.cos(np.pi * np.clip(u, 0, 1)))


# --- smoother and critical points -----------------------------------------------------------

def test_noise_sd_recovers_white_noise():
    rng = np.random.default_rng(0)
    y = np.linspace(0, 5, 2000) + rng.normal(0, 0.3, 2000)
    assert noise_sd(y) == pytest.approx(0.3, rel=0.1)


def test_critical_points_of_noise_free_peak_and_trough():
    x = np.linspace(0, 10, 120)
    # rises on [0, 4], falls on [4, 6], rises on [6, 10]: peak at 4, trough at 6
    y = 10 * _ramp(x / 4) - 3 * _ramp((x - 4) / 2) + 8 * _ramp((x - 6) / 4)
    y = y + np.random.default_rng(1).normal(0, 0.01, len(x))
    fit = fit_gp(x, y)
    prof, _ = slope_profile(fit)
    found = find_critical_points(prof, critical_z(10, fit.length, 0.05))
    kinds = [b.kind for b in found]
    assert kinds == ["peak", "trough"]
    assert [b.x for b in found] == pytest.approx([4, 6], abs=0.25)


def test_critical_points_find_a_plateau_between_two_rises():
    x = np.linspace(0, 10, 150)
    y = 5 * _ramp(x / 5) + 5 * _ramp((x - 5) / 5) + np.random.default_rng(2).normal(0, 0.01, len(x))
    fit = fit_gp(x, y)
    prof, _ = slope_profile(fit)
    found = find_critical_points(prof, critical_z(10, fit.length, 0.05))
    assert [b.kind for b in found] == ["plateau"]
    assert found[0].x == pytest.approx(5, abs=0.3)


def test_no_boundary_on_smooth_monotone_null():
    rng = np.random.default_rng(3)
    nulls = [planted_sweep(rng, null=True, run=f"n{k}") for k in range(6)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sum(len(detect_stages(p.metrics, bootstrap=0)) - 1 for p in nulls) == 0


@pytest.mark.parametrize("method", ["critical", "changepoint", "consensus"])
def test_detectors_recover_planted_peak_and_trough(method):
    rng = np.random.default_rng(11)
    p = planted_sweep(rng, n_stages=3, types=["A", "B", "A"], sched="log", n=45)
    st = detect_stages(p.metrics, method=method, bootstrap=0)
    assert list(st.columns) == STAGE_COLUMNS
    found = _index(p.steps, st["start_step"].iloc[1:])
    assert len(found) == 2 and all(abs(f - t) <= 1 for f, t in zip(found, p.boundaries))
    assert list(st["type"]) == ["A", "B", "A"]
    assert (st["method"] == method).all()


def test_small_type_b_dip_below_the_stderr_is_found():
    """The B dip is smaller than the across-chain stderr but shared offsets cancel (§5.1)."""
    rng = np.random.default_rng(5)
    p = planted_sweep(rng, n_stages=3, types=["A", "B", "A"], sched="log", n=50)
    llc = p.metrics[(p.metrics.metric == "llc") & p.metrics.chain.isna()]
    dip = -min(np.diff(llc.value.to_numpy()).cumsum().min(), 0)
    st = detect_stages(p.metrics, bootstrap=0)
    assert "B" in list(st["type"])
    b = st[st["type"] == "B"].iloc[0]
    assert abs(b["d_llc"]) < llc["stderr"].median() * 10 or dip > 0  # sanity: table carries stderr
    assert b["d_llc_stderr"] < abs(b["d_llc"]) / 2


# --- classifier at its significance edges ----------------------------------------------------

@pytest.mark.parametrize("d,se,expected", [
    (2.01, 1.0, "A"), (1.99, 1.0, "-"), (-2.01, 1.0, "B"), (-1.99, 1.0, "-"),
    (0.0, 0.0, "-"), (1e-9, 0.0, "A"), (float("nan"), 1.0, "-"), (5.0, float("nan"), "-"),
])
def test_classify_edges(d, se, expected):
    assert classify_stage(d, se, significance=2.0) == expected


# --- awkward inputs ----------------------------------------------------------------------------

def _table(steps, llc, loss=None):
    rows = [dict(run="r", step=s, metric="llc", value=v) for s, v in zip(steps, llc)]
    if loss is not None:
        rows += [dict(run="r", step=s, metric="loss", value=v) for s, v in zip(steps, loss)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_short_sweeps_do_not_crash(n):
    steps = np.unique(np.geomspace(1, 1000, n).astype(int))
    st = detect_stages(_table(steps, np.linspace(10, 20, len(steps))))
    assert list(st.columns) == STAGE_COLUMNS and len(st) >= 1
    assert st["start_step"].iloc[0] == steps[0] and st["end_step"].iloc[-1] == steps[-1]


def test_constant_signal_is_one_flat_stage():
    steps = np.arange(0, 2000, 50)
    st = detect_stages(_table(steps, np.full(len(steps), 7.0), np.full(len(steps), 3.0)))
    assert len(st) == 1 and st["type"].iloc[0] == "-"


def test_nans_and_unhealthy_rows_are_dropped():
    rng = np.random.default_rng(7)
    p = planted_sweep(rng, n_stages=3, types=["A", "B", "A"], sched="log", n=45)
    m = p.metrics.copy()
    agg = m.index[(m.metric == "llc") & m.chain.isna()]
    m.loc[agg[3], "value"] = np.nan
    m.loc[agg[20], "value"] = 1e6
    m.loc[(m.metric == "llc") & (m.step == m.loc[agg[20], "step"]), "healthy"] = False
    with pytest.warns(UserWarning, match="unhealthy"):
        st = detect_stages(m, bootstrap=0)
    found = _index(p.steps, st["start_step"].iloc[1:])
    assert len(found) == 2 and all(abs(f - t) <= 1 for f, t in zip(found, p.boundaries))


def test_bad_setting_names_the_field():
    with pytest.raises(ConfigError, match="methd"):
        detect_stages(_table([1, 2, 3], [1, 2, 3]), methd="critical")
    with pytest.raises(ConfigError, match="method"):
        detect_stages(_table([1, 2, 3], [1, 2, 3]), method="magic")


def test_ruptures_bad_parameters_get_a_message():
    with pytest.raises(BadSegmentationParameters, match=r"n_bkps=3.*n_samples=5.*min_size=2.*jump=1"):
        segment(np.zeros(5), algorithm="binseg", n_bkps=3, min_size=2)


def test_fixed_number_of_stages():
    rng = np.random.default_rng(11)
    p = planted_sweep(rng, n_stages=3, types=["A", "B", "A"], sched="log", n=45)
    assert len(detect_stages(p.metrics, n_stages=2, bootstrap=0)) == 2


# --- bootstrap ----------------------------------------------------------------------------------

def test_bootstrap_is_deterministic_under_a_seed_and_uses_chains():
    rng = np.random.default_rng(13)
    p = planted_sweep(rng, n_stages=3, types=["A", "A", "B"], sched="loglinear", n=40)
    a = detect_stages(p.metrics, bootstrap=30, seed=4)
    b = detect_stages(p.metrics, bootstrap=30, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs["bootstrap"] == "chains"
    assert ((a["confidence"] >= 0) & (a["confidence"] <= 1)).all()
    assert (a["boundary_lo"] <= a["start_step"]).all() and (a["boundary_hi"] >= a["start_step"]).all()



def test_boundary_interval_includes_the_grid_resolution():
    """A boundary at a checkpoint is only known to lie nearer to it than to its neighbours: the
    interval reaches half-way, in log(step + 1), to the next checkpoint out (geometric mean of
    step + 1), never past the first or last checkpoint; and it holds the bootstrap's range."""
    from devinterp.transitions.bootstrap import step_interval

    steps = np.array([0, 10, 100, 1000])
    assert step_interval(steps, 2, 2) == (int(np.floor(np.sqrt(11 * 101) - 1)), int(np.ceil(np.sqrt(101 * 1001) - 1)))
    assert step_interval(steps, 1, 2) == (int(np.floor(np.sqrt(1 * 11) - 1)), 317)
    assert step_interval(steps, 0, 3) == (0, 1000)
    rng = np.random.default_rng(13)
    p = planted_sweep(rng, n_stages=3, types=["A", "A", "B"], sched="loglinear", n=40)
    st = detect_stages(p.metrics, bootstrap=0)
    grid = np.sort(p.metrics["step"].unique())
    for row in st[st["stage"] > 1].itertuples():
        i = int(np.searchsorted(grid, row.start_step))
        assert (row.boundary_lo, row.boundary_hi) == step_interval(grid, i, i)
        assert grid[i - 1] < row.boundary_lo < row.start_step < row.boundary_hi < grid[i + 1]

def test_heads_column_names_the_planted_heads():
    rng = np.random.default_rng(17)
    p = planted_sweep(rng, n_stages=2, types=["A", "B"], sched="log", n=40)
    st = detect_stages(p.metrics, bootstrap=0)
    assert len(st) == 2
    for heads, planted in zip(st["heads"], p.heads):
        assert heads.split(",")[0] == planted


# --- published curves (REFERENCE.md §2.1) -------------------------------------------------------

@pytest.mark.skipif(not HOOGLAND.is_file(), reason=f"published curves not found at {HOOGLAND} "
                    "(set DEVINTERP_SHARED_DATA to the folder holding hoogland2024-lm/)")
def test_hoogland_lm_stages_with_default_settings():
    metrics = pd.read_csv(HOOGLAND)
    st = detect_stages(metrics)
    starts = st["start_step"].iloc[1:].to_numpy()
    paper = [900, 6500, 8500, 17000]
    matched = []
    for b in paper:
        near = [s for s in starts if b / 1.3 <= s <= b * 1.3]
        assert near, f"no boundary within x1.3 of {b}: found {list(starts)}"
        matched.append(near[0])
    assert len(starts) - len(set(matched)) <= 2

    def type_at(step):
        return st[(st["start_step"] <= step) & (st["end_step"] >= step)]["type"].iloc[0]

    assert type_at(7500) == "B"
    assert [type_at(s) for s in (3000, 12000, 30000)] == ["A", "A", "A"]
    assert st.attrs["bootstrap"] == "residuals"


def test_transitions_never_imports_torch():
    code = ("import sys, devinterp.transitions, devinterp.transitions.synthetic; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# --- smoother kernels and axis -------------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_slope_and_its_covariance_are_derivatives_of_the_mean(kernel):
    rng = np.random.default_rng(21)
    x = np.linspace(0, 5, 40)
    fit = fit_gp(x, np.sin(x) + rng.normal(0, 0.05, 40), kernel=kernel)
    assert fit.kernel == kernel
    xs, h = np.array([1.0, 2.3, 4.1]), 1e-4
    assert fit.slope(xs) == pytest.approx((fit.mean(xs + h) - fit.mean(xs - h)) / (2 * h), abs=1e-5)
    pts = np.ravel(np.column_stack([xs - h, xs + h]))
    D = np.zeros((3, 6))
    D[np.arange(3), 2 * np.arange(3)], D[np.arange(3), 2 * np.arange(3) + 1] = -1 / (2 * h), 1 / (2 * h)
    assert fit.covariance(xs, derivative=True) == pytest.approx(D @ fit.covariance(pts) @ D.T, rel=1e-3, abs=1e-7)


def test_auto_axis_picks_the_largest_marginal_likelihood():
    from devinterp.transitions.smoothing import candidate_axes

    rng = np.random.default_rng(22)
    p = planted_sweep(rng, n_stages=3, types=["A", "B", "A"], sched="loglinear", n=60)
    llc = p.metrics[(p.metrics.metric == "llc") & p.metrics.chain.isna()].sort_values("step")
    steps, ck, y = llc.step.to_numpy(), llc.checkpoint.to_numpy(), llc.value.to_numpy()
    fit, name, c = fit_on_axis(steps, ck, y)
    lls = [fit_gp(x, y).log_likelihood for _, _, x in candidate_axes(steps, ck)]
    assert fit.log_likelihood == pytest.approx(max(lls))
    assert name in ("log_step", "checkpoint") and c >= 1


# --- a frozen smoother (what refine uses) ------------------------------------------------------
@pytest.mark.parametrize("axis", ["auto", "checkpoint"])
def test_a_smoother_rebuilt_from_its_hyperparameters_gives_the_same_stages(axis):
    """Same hyperparameters on the same grid = the same GP, so the same stages to the last digit;
    and the table reports the hyperparameters it was given."""
    rng = np.random.default_rng(5)
    p = planted_sweep(rng, n_stages=3, types=["A", "B", "A"], sched="loglinear", n=60)
    fitted = detect_stages(p.metrics, axis=axis, bootstrap=50)
    smoother = fitted.attrs["smoother"]
    (run, params), = smoother.items()
    assert run == p.metrics.run.iloc[0] and params["signal"] == "llc" and params["length"] > 0
    rebuilt = detect_stages(p.metrics, axis=axis, bootstrap=50, smoother=smoother)
    pd.testing.assert_frame_equal(rebuilt, fitted)
    assert rebuilt.attrs["smoother"] == smoother


def test_the_frozen_checkpoint_axis_keeps_the_base_grid_numbering():
    from devinterp.transitions.detect import frozen_axis

    base = [0, 10, 100, 1000]
    params = {"axis": "checkpoint", "offset": 1.0, "index_steps": base}
    assert frozen_axis(np.array(base), params) == pytest.approx([0, 1, 2, 3])
    # new checkpoints fall between their neighbours, at their log(step + 1) fraction, not renumbering the run
    x = frozen_axis(np.array([0, 10, 31, 100, 316, 1000, 3162]), params)
    assert np.all(np.diff(x) > 0) and x[1] == 1 and x[3] == 2 and x[5] == 3
    assert 1 < x[2] < 2 and x[2] == pytest.approx(1 + np.log(32 / 11) / np.log(101 / 11))
    assert x[6] > 3  # beyond the last base checkpoint: extrapolated along the last segment
    assert frozen_axis(np.array([9.0]), {"axis": "log_step", "offset": 100.0}) == pytest.approx([np.log(109)])


def test_a_frozen_smoother_leaves_the_curve_far_from_a_densified_window_alone():
    """What refine does, on a planted sweep: detect on every 3rd checkpoint, then add every checkpoint
    of one window. With the base grid's smoother rebuilt on the denser grid (fixed hyperparameters),
    new data move the posterior mean only within a few length scales of them: beyond 3 length scales
    the smoothed LLC stays within 1% of the noise sd of the base grid's. (Refitting instead may pick
    another axis or length scale and change the curve everywhere: on this sweep it moves to the
    checkpoint-index axis, where the dense window stretches the run.)"""
    from devinterp.tables import normalize_metrics
    from devinterp.transitions.detect import _primary, frozen_axis, settings_from
    from devinterp.transitions.signals import llc_signal

    rng = np.random.default_rng(4)
    p = planted_sweep(rng, n_stages=4, types=["A", "A", "B", "A"], sched="log", n=150)
    steps = np.sort(p.metrics.step.unique())
    base = steps[::3]
    base_metrics = normalize_metrics(p.metrics[p.metrics.step.isin(base)])
    before = detect_stages(base_metrics, bootstrap=0)
    (params,) = before.attrs["smoother"].values()
    i = int(np.searchsorted(steps, before.start_step.iloc[2]))
    lo, hi = steps[max(i - 6, 0)], steps[min(i + 6, len(steps) - 1)]
    dense = normalize_metrics(p.metrics[p.metrics.step.isin(base) | p.metrics.step.between(lo, hi)])
    assert detect_stages(dense, bootstrap=0, smoother=before.attrs["smoother"]).attrs["smoother"] == before.attrs["smoother"]
    cfg = settings_from({})
    fit_before = _primary(llc_signal(base_metrics), cfg).fit
    fit_after = _primary(llc_signal(dense), cfg, params).fit
    x = frozen_axis(base, params)
    x_lo, x_hi = frozen_axis(np.array([lo, hi]), params)
    far = (x < x_lo - 3 * params["length"]) | (x > x_hi + 3 * params["length"])
    assert far.sum() >= 5
    assert np.abs(fit_after.mean(x[far]) - fit_before.mean(x[far])).max() < 0.01 * params["noise"]


def test_inspect_llc_dip_pairs_chains_and_detects_on_a_prefix(tmp_path, capsys):
    """scripts/inspect_llc_dip.py: the paired change between two steps is the mean over chains of each
    chain's own change (so chain offsets cancel), and detection on a prefix sees only those steps."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("inspect_llc_dip", REPO / "scripts" / "inspect_llc_dip.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from devinterp.transitions.signals import llc_signal

    rng = np.random.default_rng(31)
    p = planted_sweep(rng, n_stages=2, types=["A", "B"], sched="log", n=40)
    m = p.metrics
    sig = llc_signal(m)
    a, b = int(sig.step[5]), int(sig.step[30])
    chains = m[(m.metric == "llc") & m.chain.notna()].pivot_table(index="chain", columns="step", values="value")
    per_chain = chains[b] - chains[a]
    mean, se, n = mod.paired_change(sig, a, b)
    assert n == len(per_chain) >= 2
    assert mean == pytest.approx(per_chain.mean()) and se == pytest.approx(per_chain.std(ddof=1) / np.sqrt(n))
    # a chain offset added to every checkpoint changes no paired difference
    shifted = m.copy()
    rows = (shifted.metric == "llc") & (shifted.chain == shifted.chain.dropna().iloc[0])
    shifted.loc[rows, "value"] += 50.0
    assert mod.paired_change(llc_signal(shifted), a, b)[:2] == pytest.approx((mean, se))
    # the command end to end on a run directory
    run = tmp_path / "run"
    (run / "metrics").mkdir(parents=True)
    m.to_parquet(run / "metrics" / "all.parquet")
    cut = int(sig.step[20])
    assert mod.main([str(run), "--pairs", f"{a}:{b}", "--upto", str(cut)]) == 0
    out = capsys.readouterr().out
    assert f"LLC({b}) - LLC({a}), paired over {n} chains: {mean:+.2f}" in out
    last_line = out.strip().splitlines()[-1]
    assert last_line.startswith(f"detect up to step {cut}:")
    ends = [int(part.split("-")[1].split()[0]) for part in last_line.split(": ", 1)[1].split("  [")[0].split(", ")]
    assert max(ends) <= cut
