"""The locality check across checkpoints (devinterp.locality): constructed estimates whose slope is
known by construction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from devinterp.locality import LOCALITY_MIN, locality, locality_line, sweep_locality


def test_chains_that_follow_w_star_have_slope_one():
    init = [4.2, 3.8, 3.1]
    nbeta = 1000.0
    llcs = [100.0, 100.0, 100.0]  # same excess loss 0.1 nats at every checkpoint: E[L] - L* constant
    loc = locality(init, llcs, [1.0, 1.0, 1.0], nbeta, labels=["a", "b", "c"])
    assert (loc.high, loc.low) == (0, 2)
    assert math.isclose(loc.slope, 1.0) and loc.ok
    assert math.isclose(loc.stderr, math.hypot(1e-3, 1e-3) / 1.1)
    assert "a -> c" in loc.describe()


def test_chains_on_a_shared_plateau_fail():
    init = np.array([4.16, 3.32, 3.12])
    plateau = 4.37  # every checkpoint's chains at the same mean loss: llc = nbeta (plateau - L*)
    nbeta = 1000.0
    loc = locality(init, nbeta * (plateau - init), [9.0, 9.0, 9.0], nbeta)
    assert abs(loc.slope) < 1e-9 and not loc.ok
    assert "not local" in loc.describe()


def test_a_slope_below_one_half_within_noise_passes():
    init, nbeta = np.array([2.0, 1.0]), 10.0
    # slope 0.3 by construction: mean losses 2.0 + x and 1.0 + x + 0.7
    llcs = nbeta * (np.array([2.0, 1.7]) - init + 0.5)
    loc = locality(init, llcs, [2.0, 2.0], nbeta)  # se of the slope = hypot(0.2, 0.2) / 1 = 0.28
    assert math.isclose(loc.slope, 0.3) and loc.slope < LOCALITY_MIN and loc.ok
    noisy_free = locality(init, llcs, [0.1, 0.1], nbeta)
    assert not noisy_free.ok


def test_nothing_to_compare_gives_none():
    assert locality([3.0], [10.0], [1.0], 100.0) is None
    assert locality([3.0, 3.0], [10.0, 20.0], [1.0, 1.0], 100.0) is None  # equal L*: no slope
    assert locality([3.0, float("nan"), 2.0], [10.0, 5.0, float("nan")], [1.0] * 3, 100.0) is None
    loc = locality([3.0, float("nan"), 2.0, 2.5], [10.0, 5.0, float("nan"), 10.0], [1.0] * 4, 100.0)
    assert (loc.high, loc.low) == (0, 3)


def test_sweep_locality_reads_the_healthy_aggregate_llc_rows():
    rows = []
    for step, init, llc, healthy in [(0, 4.5, -150.0, False), (100, 4.2, 50.0, True), (1000, 3.2, 150.0, True)]:
        rows.append(dict(run="r", step=step, metric="llc", chain=pd.NA, value=llc, stderr=1.0, healthy=healthy,
                         init_loss=init, nbeta=1000.0))
        rows += [dict(run="r", step=step, metric="llc", chain=c, value=999.0, stderr=np.nan, healthy=True,
                      init_loss=init, nbeta=1000.0) for c in range(2)]
    rows.append(dict(run="r", step=0, metric="loss", value=5.0))
    loc = sweep_locality(pd.DataFrame(rows))
    # step 0 is unhealthy (not a minimum) and left out; chain rows are not estimates
    assert loc.where == "step 100 -> step 1000"
    assert math.isclose(loc.slope, ((4.2 + 0.05) - (3.2 + 0.15)) / 1.0)
    assert sweep_locality(pd.DataFrame(rows).drop(columns=["init_loss"])) is None
    assert locality_line(pd.DataFrame(rows)).startswith("LLC locality: ok: chain mean loss")
    assert "not judged" in locality_line(pd.DataFrame(rows).drop(columns=["init_loss"]))


def test_pairs_are_judged_against_the_whole_runs_loss_range_not_the_healthy_part():
    """As an H200 run (2026-11-28): the early checkpoints carry the loss drop (8.96 -> 4.3) but failed
    R-hat, the healthy ones sit on a plateau (4.29 -> 4.23) where the LLC falls 87 -> 77. Judged on
    the plateau's own range, that real fall reads as forgetting (slope << 1/2); against the run's
    range no healthy pair is far enough apart to judge."""
    steps = [0, 100, 1000, 3000, 4000, 9000, 15000]
    init = [8.96, 5.0, 4.41, 4.27, 4.257, 4.292, 4.231]
    llc = [20.0, 100.0, 100.0, 90.0, 87.5, 81.0, 77.0]
    healthy = [False, False, False, False, True, True, True]
    rows = [dict(run="r", step=s, metric="llc", chain=pd.NA, value=v, stderr=0.4, healthy=h, init_loss=L, nbeta=30.0)
            for s, L, v, h in zip(steps, init, llc, healthy)]
    assert sweep_locality(pd.DataFrame(rows)) is None
    assert "not judged" in locality_line(pd.DataFrame(rows))
    plateau_only = pd.DataFrame(rows[4:])  # what the check saw before: the plateau's range alone
    assert not sweep_locality(plateau_only).ok
    # where healthy estimates span the run, nothing changes: chains that forget w* still fail
    forgot = [dict(r, healthy=True, value=30.0 * (9.5 - r["init_loss"])) for r in rows]
    assert not sweep_locality(pd.DataFrame(forgot)).ok


def test_detection_warns_when_the_chains_forget_w_star():
    """Chains on a shared plateau: the LLC is nbeta x (plateau - loss); detection still runs, warns
    and adds a note. With chains that follow w* it stays quiet."""
    import warnings

    import pytest

    from devinterp.transitions import detect_stages

    steps = np.unique(np.round(np.geomspace(1, 3000, 30)).astype(int))
    init = 4.2 - 1.0 / (1 + np.exp(-(np.log(steps) - 6.5) * 3))  # a loss curve falling 4.2 -> 3.2
    nbeta = 1000.0

    def table(llc):
        return pd.DataFrame([dict(run="r", step=int(s), checkpoint=i, metric="llc", value=float(v), stderr=1.0,
                                  healthy=True, init_loss=float(L), nbeta=nbeta)
                             for i, (s, v, L) in enumerate(zip(steps, llc, init))])

    with pytest.warns(UserWarning, match="not local"):
        forgot = detect_stages(table(nbeta * (4.37 - init)), bootstrap=0)
    assert any("locality slope" in n for n in forgot.attrs["notes"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        local = detect_stages(table(50 + 100 * (4.2 - init)), bootstrap=0)  # E[L] - L* grows by 0.1 nats only
    assert not any("locality" in n for n in local.attrs["notes"])


def test_calibration_probe_order_settles_the_extremes_early():
    from types import SimpleNamespace

    from devinterp.llc.calibrate import probe_order, settled_locality

    # the quickstart's probes (steps 0, 243, 1225, 1525, 2125, 3000): highest, lowest, 2nd highest, ...
    losses = [4.455, 4.162, 3.316, 3.21, 3.143, 3.119]
    assert probe_order(losses) == [0, 5, 1, 4, 2, 3]
    assert probe_order([]) == [] and probe_order([2.0]) == [0]

    def res(L, llc):
        return SimpleNamespace(init_loss=L, llc=llc, total_stderr=1.0)

    plateau = [(5, res(3.119, 1000 * (4.37 - 3.119))), (1, res(4.162, 1000 * (4.37 - 4.162)))]
    # step 0 was left out (not a minimum); the pending probes lie between 3.119 and 4.162: settled, fails
    early = settled_locality(plateau, [3.316, 3.21, 3.143], 1000.0)
    assert early is not None and not early.ok and early.where == "model 1 -> model 5"  # highest L_n(w*) -> lowest
    # a pending probe outside the range could still become an extreme: not settled
    assert settled_locality(plateau, [3.0], 1000.0) is None
    assert settled_locality(plateau[:1], [], 1000.0) is None


def test_chains_that_forget_w_star_for_part_of_the_run_fail():
    """Like the calibrated 20k ICL sweep: the chains sit on the plateau (mean loss 4.19) while L* falls
    4.17 -> 2.12, and follow L* only later. The extremes alone pass (slope 0.70); the pair inside the
    plateau stretch, whose loss gap is over half the range, does not."""
    from devinterp.locality import judged_pairs, pairs_z

    init = np.array([4.166, 3.05, 2.115, 2.05, 1.846])
    mean = np.array([4.189, 4.164, 4.13, 2.92, 2.567])
    nbeta = 66.67
    llcs = nbeta * (mean - init)
    extremes = locality(init[[0, 4]], llcs[[0, 4]], [0.5, 0.5], nbeta)
    assert math.isclose(extremes.slope, (4.189 - 2.567) / (4.166 - 1.846)) and extremes.ok  # 0.70
    loc = locality(init, llcs, [0.5] * 5, nbeta, labels=[f"step {s}" for s in (0, 737, 2916, 8762, 20000)])
    assert not loc.ok and loc.where == "step 0 -> step 2916"  # the worst judged pair
    assert math.isclose(loc.slope, (4.189 - 4.13) / (4.166 - 2.115))
    # judged: gaps >= half the range (1.16): (0, 2916), (0, 8762), (0, 20000), (737, 20000)
    assert sorted(judged_pairs(init)) == [(0, 2), (0, 3), (0, 4), (1, 4)] and loc.pairs == 4
    assert math.isclose(loc.z, pairs_z(4)) and math.isclose(pairs_z(1), 2.0)
    assert 2.0 < pairs_z(4) < pairs_z(1000) < 4.5


def test_a_large_llc_change_between_checkpoints_of_nearly_equal_loss_is_not_judged():
    """Checkpoints 2,500 and 2,575 of the calibrated quickstart: L* 3.128 vs 3.126 and LLCs differing
    by 9, i.e. a pairwise slope of -5.8 that only says the LLC moved; their gap is far below half the
    range, so the pair is not judged."""
    init = np.array([4.2, 3.128, 3.126])
    llcs = np.array([10.0, 435.0, 446.0])
    loc = locality(init, llcs, [1.0, 1.0, 1.0], 1000.0)
    assert (1, 2) not in [(loc.high, loc.low)] and loc.ok and loc.pairs == 2


def test_a_failing_pair_says_how_much_the_llc_rose():
    """Below 1/2 but above 0 the slope has two readings (forgetting, or an LLC rise above nbeta x half
    the loss gap); the sentence gives the rise and that bound. Constructed: L* 4.1 -> 2.7, LLC 0 -> 55
    at nbeta 66.67, so the rise 55 exceeds 66.67 x 1.4 / 2 = 46.7 and the slope is 1 - 55 / 93.3."""
    nbeta = 66.67
    loc = locality([4.1, 2.7], [0.0, 55.0], [0.5, 0.5], nbeta)
    assert not loc.ok and math.isclose(loc.slope, 1 - 55 / (nbeta * 1.4)) and math.isclose(loc.llc_change, 55.0)
    assert "it rose 55, more than nbeta x half the loss gap (46.7)" in loc.describe()
    plateau = locality([4.1, 2.7], [0.0, nbeta * 1.4], [0.5, 0.5], nbeta)  # slope 0: no second reading
    assert not plateau.ok and "rose steeply" not in plateau.describe()
