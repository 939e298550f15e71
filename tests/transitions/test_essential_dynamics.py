"""Essential dynamics (REFERENCE.md §2.3): PCA, the growing Gaussian filter, curvature, evolute,
turning points on planted trajectories, and the metrics-table rows. Expected values come from
the planted geometry or closed forms, never from a previous run of the code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter1d

from devinterp.tables import METRIC_COLUMNS
from devinterp.transitions.essential_dynamics import (
    curvature, ed_rows, essential_dynamics, growing_sigmas, osculating, smooth_growing,
)


def _planted_turn(t0: int, T: int = 80, P: int = 200, angle: float = np.pi / 2, noise: float = 0.5, seed: int = 0):
    """Features whose 2-D latent path is a straight line that turns by ``angle`` at row t0."""
    rng = np.random.default_rng(seed)
    t = np.arange(T, dtype=float)
    before = np.column_stack([t, np.zeros(T)])
    after = np.maximum(t - t0, 0)[:, None] * np.array([np.cos(angle) - 1, np.sin(angle)])
    latent = before + after
    W = rng.normal(size=(2, P))
    return latent @ W + rng.normal(0, noise, (T, P)), 10 * t


@pytest.mark.parametrize("t0", [15, 30, 45, 60])
def test_turning_point_of_a_planted_sharp_turn_is_found_within_one(t0):
    F, steps = _planted_turn(t0, seed=t0)
    r = essential_dynamics(F, steps, n_components=3)
    assert len(r.turning_points) == 1
    assert abs(r.turning_points[0].index - t0) <= 1
    assert r.boundaries == [int(steps[r.turning_points[0].index])]
    assert r.turning_points[0].angle == pytest.approx(np.pi / 2, abs=0.35)


def test_two_turns_are_both_found():
    rng = np.random.default_rng(3)
    T, P = 90, 150
    t = np.arange(T, dtype=float)
    # line along e1, turn to e2 at 30, turn to e3 at 60
    latent = np.column_stack([np.minimum(t, 30), np.clip(t - 30, 0, 30), np.maximum(t - 60, 0)])
    F = latent @ rng.normal(size=(3, P)) + rng.normal(0, 0.3, (T, P))
    r = essential_dynamics(F, t * 100)
    idx = [p.index for p in r.turning_points]
    assert len(idx) == 2 and abs(idx[0] - 30) <= 1 and abs(idx[1] - 60) <= 1


def test_straight_line_has_no_turning_point():
    rng = np.random.default_rng(4)
    T, P = 60, 100
    t = np.arange(T, dtype=float)
    F = np.outer(t, rng.normal(size=P)) + rng.normal(0, 0.3, (T, P))
    assert essential_dynamics(F, t).turning_points == []


def test_pca_explained_variance_and_order():
    rng = np.random.default_rng(5)
    T, P = 50, 40
    a, b = rng.normal(size=T) * 10, rng.normal(size=T) * 3
    a, b = a - a.mean(), b - b.mean()
    b = b - (a @ b) / (a @ a) * a  # uncorrelated columns: the PCs are exactly a and b
    F = np.outer(a, np.eye(P)[0]) + np.outer(b, np.eye(P)[1])
    r = essential_dynamics(F, np.arange(T), n_components=2, sigma_start=0)
    total = np.var(a) + np.var(b)
    assert r.explained_variance_ratio == pytest.approx([np.var(a) / total, np.var(b) / total], rel=1e-6)
    assert np.abs(r.scores[:, 0]) == pytest.approx(np.abs(a), rel=1e-6)
    assert np.allclose(r.smoothed, r.scores)  # sigma 0 = no smoothing


def test_growing_filter_matches_scipy_window_rule():
    x = np.random.default_rng(6).normal(size=(40, 2))
    sig = growing_sigmas(40, 1.0, 5.0)
    assert sig[0] == 1.0 and sig[-1] == 5.0 and np.all(np.diff(sig) > 0)
    out = smooth_growing(x, sig)
    for i in (0, 7, 20, 39):
        r = int(4 * sig[i] + 0.5)
        lo, hi = max(0, i - r), min(40, i + r + 1)
        assert out[i] == pytest.approx(gaussian_filter1d(x[lo:hi], sig[i], axis=0)[i - lo])
    assert growing_sigmas(501)[-1] == pytest.approx(50.1)  # the LM paper's 1 -> 50 over 501


def test_curvature_and_evolute_of_a_circle():
    theta = np.linspace(0, np.pi, 400)
    c = 3.0 * np.column_stack([np.cos(theta), np.sin(theta)]) + [1.0, -2.0]
    kappa, radius, centres = osculating(c)
    assert kappa[5:-5] == pytest.approx(1 / 3.0, rel=1e-3)
    assert radius[5:-5] == pytest.approx(3.0, rel=1e-3)
    assert centres[5:-5] == pytest.approx(np.tile([1.0, -2.0], (390, 1)), abs=1e-2)  # evolute = centre
    assert curvature(c)[5:-5] == pytest.approx(1 / 3.0, rel=1e-3)


def test_ed_rows_are_model_level_metrics_rows():
    F, steps = _planted_turn(30)
    r = essential_dynamics(F, steps, n_components=3)
    rows = ed_rows(r, run="toy")
    assert list(rows.columns) == METRIC_COLUMNS
    assert sorted(rows["metric"].unique()) == ["ed_pc1", "ed_pc2", "ed_pc3"]
    assert rows["layer"].isna().all() and rows["head"].isna().all() and rows["chain"].isna().all()
    pc1 = rows[rows.metric == "ed_pc1"].sort_values("step")
    assert pc1["value"].to_numpy() == pytest.approx(r.scores[:, 0])
    assert (pc1["step"].to_numpy() == steps).all()


def test_ed_signal_feeds_detect_stages():
    """ed_pc rows are an ordinary model-level signal: with no LLC, detect_stages reads from it."""
    from devinterp.transitions import detect_stages

    T = 60
    t = np.arange(T, dtype=float)
    rng = np.random.default_rng(8)
    # PC1 rises, then falls after row 30: a critical point the detector must see
    latent = np.where(t <= 30, t, 60 - t)
    F = np.outer(latent, rng.normal(size=50)) + rng.normal(0, 0.2, (T, 50))
    r = essential_dynamics(F, (t + 1) * 50, n_components=2)
    rows = ed_rows(r, run="ed")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = detect_stages(rows, signals=["ed_pc1"], bootstrap=0, axis="checkpoint")
    assert len(st) == 2 and abs(int(st["start_step"].iloc[1]) - 31 * 50) <= 50


def test_bad_input_shapes_raise():
    with pytest.raises(ValueError, match="one row per step"):
        essential_dynamics(np.zeros((5, 3)), [1, 2, 3])
    with pytest.raises(ValueError, match="at least 2"):
        essential_dynamics(np.zeros((1, 3)), [1])


# --- essential dynamics from a sweep's metrics table ----------------------------------------------

def _token_loss_table(F: np.ndarray, steps: np.ndarray, run: str = "sweep", seed: int = 0) -> pd.DataFrame:
    """Long rows as the sweep writes them: metric 'token_loss', one row per checkpoint and probe,
    an integer 'token' column, layer/head/chain null; in shuffled order, with an LLC row per
    checkpoint next to them."""
    T, P = F.shape
    rows = [dict(run=run, step=int(steps[t]), checkpoint=t, metric="token_loss", value=float(F[t, j]), token=j)
            for t in range(T) for j in range(P)]
    rows += [dict(run=run, step=int(steps[t]), checkpoint=t, metric="llc", value=float(t)) for t in range(T)]
    df = pd.DataFrame(rows)
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize("t0", [20, 40])
def test_ed_from_metrics_finds_a_planted_turn(t0):
    from devinterp.transitions import ed_from_metrics

    F, steps = _planted_turn(t0, seed=100 + t0)
    table = _token_loss_table(F, steps, seed=t0)
    r = ed_from_metrics(table, n_components=3)
    assert r is not None and r.scores.shape == (len(steps), 3)
    assert (r.steps == steps).all() and (r.checkpoints == np.arange(len(steps))).all()
    assert len(r.turning_points) == 1 and abs(r.turning_points[0].index - t0) <= 1


def test_ed_from_metrics_matches_the_matrix_and_its_rows_append_to_the_table():
    from devinterp.tables import normalize_metrics
    from devinterp.transitions import ed_from_metrics

    F, steps = _planted_turn(30, seed=7)
    table = _token_loss_table(F, steps)
    table["checkpoint"] += 5  # the table's own checkpoint indices, not row numbers
    r = ed_from_metrics(table, n_components=2)
    direct = essential_dynamics(F, steps, n_components=2)
    assert np.allclose(r.scores, direct.scores)
    rows = ed_rows(r, run="sweep")
    assert (rows[rows.metric == "ed_pc1"]["checkpoint"].to_numpy() == np.arange(len(steps)) + 5).all()
    both = normalize_metrics(pd.concat([table, rows], ignore_index=True))
    assert list(both.columns[:len(METRIC_COLUMNS)]) == METRIC_COLUMNS and "token" in both.columns
    pc1 = both[both.metric == "ed_pc1"]
    assert len(pc1) == len(steps) and pc1["token"].isna().all()
    # the appended rows line up with the table's steps and checkpoints
    llc = both[both.metric == "llc"].set_index("checkpoint")["step"]
    assert (pc1.set_index("checkpoint")["step"] == llc.loc[pc1["checkpoint"]].to_numpy()).all()


def test_ed_from_metrics_without_token_rows_and_with_several_runs():
    from devinterp.transitions import ed_from_metrics, token_loss_matrix

    F, steps = _planted_turn(30, T=40, P=20)
    table = _token_loss_table(F, steps)
    assert ed_from_metrics(table[table.metric != "token_loss"]) is None
    two = pd.concat([table, _token_loss_table(F, steps, run="other")], ignore_index=True)
    with pytest.raises(ValueError, match="several runs"):
        ed_from_metrics(two)
    assert ed_from_metrics(two, run="other") is not None
    with pytest.raises(ValueError, match="'token' column"):
        token_loss_matrix(table.drop(columns="token"))
    # a probe missing at one checkpoint is dropped; the others remain
    holey = table.drop(table[(table.metric == "token_loss") & (table.token == 3) & (table.checkpoint == 7)].index)
    Fh, _, _ = token_loss_matrix(holey)
    assert np.isnan(Fh[7, 3]) and np.isfinite(np.delete(Fh, 3, axis=1)).all()
    assert ed_from_metrics(holey).components[:, 3].tolist() == [0.0] * 3
