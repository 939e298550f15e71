"""detect_stages: the stages table (DESIGN.md) from the long metrics table, a pure function.

Pipeline per run: the LLC series (per-chain values kept; their scatter bounds the noise below) →
GP smoother against log step → slope with its posterior covariance → boundaries (critical points,
change points on slope states, or both) → each placed, and the doubtful ones tested, by a local
fit of the data (localize.py) → stages with d_llc (chain by chain where possible), d_loss and type
→ bootstrap confidence and interval of each boundary → the heads that changed most. See
docs/detection.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from pydantic import ValidationError

from devinterp.config import ConfigError, DetectConfig, _format_errors
from devinterp.locality import sweep_locality
from devinterp.tables import STAGE_COLUMNS, normalize_metrics
from devinterp.transitions import changepoints as cp
from devinterp.transitions.bootstrap import boundary_confidence, resamples, step_interval
from devinterp.transitions.classify import change_with_stderr, classify_stage
from devinterp.transitions.critical import Boundary, SlopeProfile, critical_z, find_critical_points
from devinterp.transitions.heads import head_tables, rank_heads
from devinterp.transitions.localize import flat_edge, plateau, vertex
from devinterp.transitions.signals import HEAD_METRICS, Signal, chain_noise_sd, llc_signal, model_signal, to_axis
from devinterp.transitions.smoothing import GPFit, fit_gp, fit_on_axis, slope_profile


def settings_from(settings: dict) -> DetectConfig:
    """Validate keyword settings through :class:`DetectConfig`; a bad one raises ConfigError naming it."""
    try:
        return DetectConfig(**settings)
    except ValidationError as err:
        allowed = ", ".join(DetectConfig.model_fields)
        raise ConfigError(_format_errors(err, "detect_stages") + f"\n(allowed settings: {allowed})") from None


@dataclass
class _Primary:
    """The signal boundaries are read from, its smoother and slope profile."""

    signal: Signal
    x: np.ndarray
    fit: GPFit
    profile: SlopeProfile
    G: np.ndarray  # slope on the profile grid = G @ y
    z_crit: float
    axis: str = "log_step"  # the axis actually used ('auto' resolved)
    offset: float = 1.0  # the log_step axis is log(step + offset)
    frozen: dict | None = None  # the smoother_params this one was rebuilt from, if any


def axis_jacobian(xs: np.ndarray, steps: np.ndarray, x: np.ndarray, axis: str, offset: float) -> np.ndarray | None:
    """d(axis)/d log(step + 1) on the grid ``xs`` of the axis (None when the axis is log(step + 1)).
    For the checkpoint axis the map index -> log(step + 1) is the checkpoints' own, differentiated
    by central differences and interpolated."""
    if axis == "log_step" and offset == 1.0:
        return None
    if axis == "log_step":
        s = np.exp(xs) - offset
        return (s + 1.0) / (s + offset)
    if axis == "step":
        return xs + 1.0
    lx = np.log(np.asarray(steps, float) + 1.0)
    dl = np.gradient(lx, np.asarray(x, float))
    return 1.0 / np.clip(np.interp(xs, x, dl), 1e-12, None)


def smoother_params(p: _Primary) -> dict:
    """The primary smoother's hyperparameters as plain values (``stages.attrs["smoother"][run]``),
    enough to rebuild the same smoother on another grid of the run: axis, offset, kernel, length,
    amplitude, noise, and for the checkpoint-index axis the steps that defined the index."""
    if p.frozen is not None:
        return dict(p.frozen)
    out = {"signal": p.signal.name, "axis": p.axis, "offset": float(p.offset), "kernel": p.fit.kernel,
           "length": float(p.fit.length), "amplitude": float(p.fit.amplitude), "noise": float(p.fit.noise)}
    if p.axis == "checkpoint":
        out["index_steps"] = [int(s) for s in p.signal.step]
    return out


def frozen_axis(steps: np.ndarray, params: dict) -> np.ndarray:
    """x of ``steps`` on the axis of frozen smoother ``params``. The checkpoint-index axis is the
    index of the grid it was fitted on, interpolated linearly in log(step + 1) between (and
    extrapolated along the end segments beyond) those checkpoints, so new checkpoints fall between
    their neighbours instead of renumbering the run."""
    steps = np.asarray(steps, float)
    if params["axis"] != "checkpoint":
        return to_axis(steps, np.arange(len(steps)), params["axis"], params["offset"])
    ref = np.log(np.asarray(params["index_steps"], float) + 1.0)
    u = np.log(steps + 1.0)
    idx = np.arange(len(ref), dtype=float)
    x = np.interp(u, ref, idx)
    lo, hi = u < ref[0], u > ref[-1]
    x[lo] = (u[lo] - ref[0]) / (ref[1] - ref[0])
    x[hi] = idx[-1] + (u[hi] - ref[-1]) / (ref[-1] - ref[-2])
    return x


def _primary(sig: Signal, cfg: DetectConfig, frozen: dict | None = None) -> _Primary | None:
    if len(sig) < 3 or np.ptp(sig.y) == 0:
        return None
    if frozen is not None:  # the smoother of another grid of this run (refine): same model, more data
        axis, offset = frozen["axis"], frozen["offset"]
        x = frozen_axis(sig.step, frozen)
        fit = GPFit(x, sig.y, length=frozen["length"], amplitude=frozen["amplitude"], noise=frozen["noise"],
                    log_likelihood=float("nan"), kernel=frozen["kernel"])
    else:
        axis, offset = ("log_step" if cfg.axis == "auto" else cfg.axis), 1.0
        floor = chain_noise_sd(sig.chains)  # the scatter between chains bounds the noise below (§5.1)
        if cfg.axis == "auto" and len(sig) >= 10:
            fit, axis, offset = fit_on_axis(sig.step, sig.checkpoint, sig.y, kernel=cfg.kernel, noise_floor=floor)
            x = fit.x
        else:
            x = to_axis(sig.step, sig.checkpoint, axis)
            fit = fit_gp(x, sig.y, kernel=cfg.kernel, noise_floor=floor)
    profile, G = slope_profile(fit)
    profile.jacobian = axis_jacobian(profile.xs, sig.step, x, axis, offset)
    return _Primary(sig, x, fit, profile, G, critical_z(float(x[-1] - x[0]), fit.length, cfg.alpha), axis, offset,
                    frozen)


def _extra_features(metrics: pd.DataFrame, cfg: DetectConfig, primary: _Primary) -> list[np.ndarray]:
    """Slope z-scores, at the primary signal's checkpoints, of the other signals in ``cfg.signals``."""
    out = []
    for name in cfg.signals:
        if name == primary.signal.name or (name == "llc" and primary.signal.name == "llc"):
            continue
        if name in HEAD_METRICS:
            from devinterp.transitions.signals import head_table

            t = head_table(metrics, name)
            if t is None:
                continue
            col = (t.max() - t.min()).idxmax()
            s = t[col].dropna()
            sig = Signal(name, np.zeros(len(s), np.int64), s.index.to_numpy(np.int64), s.to_numpy(float))
            steps = metrics.groupby("checkpoint")["step"].first()
            sig.step = steps.loc[sig.checkpoint].to_numpy(np.int64)
        else:
            sig = llc_signal(metrics, drop_unhealthy=cfg.drop_unhealthy) if name == "llc" else model_signal(metrics, name)
        if sig is None or len(sig) < 3 or np.ptp(sig.y) == 0:
            continue
        x = (frozen_axis(sig.step, primary.frozen) if primary.frozen is not None else
             to_axis(sig.step, sig.checkpoint, primary.axis, primary.offset))
        fit = fit_gp(x, sig.y, kernel=cfg.kernel)
        xs = primary.x
        g = fit.operator(xs, derivative=True) @ sig.y
        sd = np.sqrt(np.clip(np.diag(fit.covariance(xs, derivative=True)), 1e-300, None))
        out.append(g / sd)
    return out


def _boundaries(p: _Primary, cfg: DetectConfig, g: np.ndarray, z_crit: float, method: str,
                extra: list[np.ndarray]) -> list[Boundary]:
    prof = SlopeProfile(p.profile.xs, g, p.profile.cov, p.profile.length, p.profile.x_data, p.profile.jacobian)
    min_ck = max(cfg.min_size, 3)
    if method == "critical":
        return find_critical_points(prof, z_crit, min_checkpoints=min_ck, tentative=True)
    # change points on the slope states, evaluated at the checkpoints
    idx = np.clip(np.searchsorted(prof.xs, p.x), 0, len(prof.xs) - 1)
    z_ck = (g / prof.sd)[idx]
    feats = cp.state_features([z_ck, *extra], z_crit)
    pen = cp.bic_penalty(len(feats), feats.shape[1], z_crit) if cfg.penalty == "bic" else float(cfg.penalty)
    try:
        state_ck = cp.segment_states(feats, algorithm=cfg.algorithm, pen=pen, min_size=cfg.min_size)
    except cp.BadSegmentationParameters:
        return []
    nearest = np.abs(prof.xs[:, None] - p.x[None, :]).argmin(1)
    return find_critical_points(prof, z_crit, min_checkpoints=min_ck, state=state_ck[nearest], tentative=True)


def _localize(p: _Primary, found: list[Boundary], y: np.ndarray, z_crit: float, cfg: DetectConfig) -> list[Boundary]:
    """Each boundary's position refitted on the data of its window (localize.py), against
    log(step + 1); boundaries without a window, or whose window is too short, keep theirs. A
    tentative one (critical.py, step 5) is kept only if its local test — a flat first or last
    stage, else a plateau in level form — finds it in the data."""
    u = np.log(p.signal.step.astype(float) + 1.0)
    out = []
    for b in found:
        if b.lo is None or b.hi is None:
            out.append(b)
            continue
        inside = (p.x >= b.lo - 1e-12) & (p.x <= b.hi + 1e-12)
        if b.tentative:
            v, kind, shape = None, b.kind, b.shape
            if "flat" in b.tentative:
                v = flat_edge(u[inside], y[inside], noise=p.fit.noise, shape=b.shape, z_crit=z_crit,
                              min_flat=max(cfg.min_size, 3), alpha=cfg.alpha)
            if v is None and "plateau" in b.tentative:
                v = plateau(u[inside], y[inside], noise=p.fit.noise, sign=b.sign, z_crit=z_crit, alpha=cfg.alpha)
                kind, shape = "plateau", "two_sided"
            if v is not None:
                out.append(replace(b, x=float(np.interp(v, u, p.x)), kind=kind, shape=shape, tentative=""))
            continue
        v = vertex(u[inside], y[inside], noise=p.fit.noise, shape=b.shape, alpha=cfg.alpha)
        out.append(b if v is None else replace(b, x=float(np.interp(v, u, p.x))))
    return out


def _snap(p: _Primary, found: list[Boundary], min_size: int) -> list[tuple[int, float]]:
    """Boundaries as (checkpoint index, strength), one per checkpoint, stages >= min_size checkpoints."""
    n = len(p.x)
    out: dict[int, float] = {}
    for b in found:
        i = int(np.argmin(np.abs(p.x - b.x)))
        if 0 < i < n - 1:
            out[i] = max(out.get(i, -np.inf), b.strength)
    items = sorted(out.items())
    gap = max(1, min_size - 1)
    while True:
        edges = [(0, np.inf), *items, (n - 1, np.inf)]
        bad = [k for k in range(1, len(edges)) if edges[k][0] - edges[k - 1][0] < gap]
        if not bad:
            return items
        k = bad[0]
        weaker = k if edges[k][1] <= edges[k - 1][1] else k - 1  # never the run's ends (inf)
        if weaker == len(edges) - 1:
            weaker = k - 1
        items.remove(edges[weaker])


def _detect(p: _Primary, cfg: DetectConfig, y: np.ndarray, extra: list[np.ndarray]) -> list[tuple[int, float]]:
    """Boundaries for one series ``y`` (the data or a resample): tested on its smoothed slope,
    placed by the local fit."""
    g = p.G @ y

    def found(z_crit: float, method: str) -> list[tuple[int, float]]:
        return _snap(p, _localize(p, _boundaries(p, cfg, g, z_crit, method, extra), y, z_crit, cfg), cfg.min_size)

    def at(z_crit: float) -> list[tuple[int, float]]:
        if cfg.method == "consensus":
            crit = found(z_crit, "critical")
            chg = [i for i, _ in found(z_crit, "changepoint")]
            return [(i, s) for i, s in crit if any(abs(i - j) <= cfg.tolerance for j in chg)]
        return found(z_crit, cfg.method)

    if cfg.n_stages is None:
        return at(p.z_crit)
    want = cfg.n_stages - 1
    found = at(p.z_crit)
    for z in np.geomspace(p.z_crit, 0.25, 25)[1:]:
        if len(found) >= want:
            break
        found = at(float(z))
    if len(found) < want:
        warnings.warn(f"found only {len(found) + 1} of the {cfg.n_stages} stages asked for", stacklevel=4)
    keep = sorted(sorted(found, key=lambda t: -t[1])[:want])
    return keep


def _drop_short_flat_ends(idx: list[int], n: int, kind_of, min_flat: int) -> list[int]:
    """Boundaries without a first or last stage that is no stage: one with no significant LLC
    change ('-') and fewer than ``min_flat`` checkpoints, the least a flat stage must hold (the
    smoother's slope at the very ends of the data rests on one side only and can bend there)."""
    idx = list(idx)
    while idx:
        if idx[0] + 1 < min_flat and kind_of(0, idx[0]) == "-":
            idx.pop(0)
        elif n - idx[-1] < min_flat and kind_of(idx[-1], n - 1) == "-":
            idx.pop()
        else:
            break
    return idx


def _single_stage(run: str, steps: np.ndarray, method: str) -> pd.DataFrame:
    return pd.DataFrame([{
        "run": run, "stage": 1, "start_step": int(steps[0]), "end_step": int(steps[-1]), "type": "-",
        "d_loss": np.nan, "d_llc": np.nan, "d_llc_stderr": np.nan, "confidence": 1.0,
        "boundary_lo": int(steps[0]), "boundary_hi": int(steps[0]), "heads": "", "method": method,
    }], columns=STAGE_COLUMNS)


def _detect_run(m: pd.DataFrame, run: str, cfg: DetectConfig, frozen: dict | None = None) -> pd.DataFrame:
    steps_all = np.sort(m["step"].unique())
    sig = llc_signal(m, drop_unhealthy=cfg.drop_unhealthy)
    if sig is None or len(sig) < 3:
        for name in cfg.signals:
            if name != "llc" and name not in HEAD_METRICS:
                sig = model_signal(m, name)
                if sig is not None and len(sig) >= 3:
                    warnings.warn(f"run {run!r}: no usable LLC; boundaries are read from {name!r} and "
                                  "every stage is typed '-'", stacklevel=3)
                    break
        else:
            sig = None
    if sig is None or len(sig) < 3:
        return _single_stage(run, steps_all, cfg.method) if len(steps_all) else pd.DataFrame(columns=STAGE_COLUMNS)
    has_llc = sig.name == "llc"
    p = _primary(sig, cfg, frozen if frozen is not None and sig.name == frozen.get("signal", "llc") else None)
    if p is None:  # constant signal: one stage
        out = _single_stage(run, sig.step, cfg.method)
        if has_llc:
            out["d_llc"], out["d_llc_stderr"] = 0.0, 0.0
        return out
    extra = _extra_features(m, cfg, p) if cfg.method in ("changepoint", "consensus") else []
    found = _detect(p, cfg, sig.y, extra)
    n = len(p.x)
    M = p.fit.operator(p.x)
    cov = p.fit.covariance(p.x)

    def kind_of(i: int, j: int) -> str:
        return classify_stage(*change_with_stderr(M, cov, sig.y, sig.chains, i, j), cfg.significance) if has_llc else "-"

    idx = _drop_short_flat_ends([i for i, _ in found], n, kind_of, max(cfg.min_size, 3))

    # bootstrap: same hyperparameters, so a resample's slope is G @ y*; its boundaries are placed
    # by the same local fits
    conf, lo, hi = np.ones(len(idx)), np.array(idx, int), np.array(idx, int)
    if cfg.bootstrap and idx:
        series = resamples(sig.y, chains=sig.chains, fitted=M @ sig.y, n=cfg.bootstrap, seed=cfg.seed)
        conf, lo, hi = boundary_confidence(idx, lambda ys: [i for i, _ in _detect(p, cfg, ys, extra)],
                                           series, tolerance=cfg.tolerance)

    edges = [0, *idx, n - 1]
    loss = model_signal(m, "loss")
    tables = head_tables(m)
    rows = []
    for k in range(len(edges) - 1):
        i, j = edges[k], edges[k + 1]
        if has_llc:
            d_llc, se = change_with_stderr(M, cov, sig.y, sig.chains, i, j)
            kind = classify_stage(d_llc, se, cfg.significance)
        else:
            d_llc, se, kind = np.nan, np.nan, "-"
        d_loss = np.nan
        if loss is not None and len(loss) >= 2:
            a = int(np.argmin(np.abs(loss.step - sig.step[i])))
            b = int(np.argmin(np.abs(loss.step - sig.step[j])))
            d_loss = float(loss.y[b] - loss.y[a])
        heads = rank_heads(tables, int(sig.checkpoint[i]), int(sig.checkpoint[j]), cfg.top_heads)
        if k == 0:
            c, blo, bhi = 1.0, int(sig.step[0]), int(sig.step[0])
        else:
            c = float(conf[k - 1])
            blo, bhi = step_interval(sig.step, lo[k - 1], hi[k - 1])
        rows.append({"run": run, "stage": k + 1, "start_step": int(sig.step[i]), "end_step": int(sig.step[j]),
                     "type": kind, "d_loss": d_loss, "d_llc": d_llc, "d_llc_stderr": se, "confidence": c,
                     "boundary_lo": blo, "boundary_hi": bhi, "heads": ",".join(heads),
                     "method": cfg.method if has_llc else f"{cfg.method}:{sig.name}"})
    out = pd.DataFrame(rows, columns=STAGE_COLUMNS)
    bootstrap_kind = "chains" if sig.chains is not None else "residuals"
    out.attrs["bootstrap"] = bootstrap_kind if cfg.bootstrap else "off"
    out.attrs["smoother"] = smoother_params(p)
    out.attrs["notes"] = list(sig.notes) + (
        [] if bootstrap_kind == "chains" or not cfg.bootstrap else
        ["no per-chain LLC rows: confidence from a residual bootstrap (assumes independent residuals)"])
    local = sweep_locality(m) if has_llc else None
    if local is not None and not local.ok:
        out.attrs["notes"].append(local.describe())
        warnings.warn(f"run {run!r}: {local.describe()}", stacklevel=3)
    return out


def detect_stages(metrics: pd.DataFrame, *, smoother: dict | None = None, **settings) -> pd.DataFrame:
    """The stages table (columns ``devinterp.tables.STAGE_COLUMNS``) of every run in ``metrics``.

    Args:
        metrics: the long metrics table (DESIGN.md); it is normalised first, so missing optional
            columns are fine. Per-chain LLC rows (``chain`` set) enable the chain bootstrap and
            chain-by-chain differences; LLC rows with ``healthy == False`` are dropped with a warning.
        smoother: {run: params} from an earlier detection's ``attrs["smoother"]``: rebuild that
            run's smoother (axis, kernel, length scale, amplitude, noise) on this table's
            checkpoints instead of fitting it anew. ``devinterp refine`` uses it so that new
            checkpoints in one window add data to the same model of the curve rather than
            changing the model everywhere. Runs not named are fitted as usual.
        **settings: fields of :class:`devinterp.config.DetectConfig` (defaults there); an unknown
            or invalid one raises ``ConfigError`` naming it.

    Returns one row per stage, in step order, stage numbers from 1. Boundaries are critical points
    of the smoothed LLC against the axis (peaks, troughs, plateaus, edges of flat stages). A run
    with no LLC reads boundaries from the first usable signal in ``signals`` (types '-'); a run with
    fewer than 3 usable checkpoints or a constant signal is one stage. ``DataFrame.attrs`` holds
    ``bootstrap`` ('chains', 'residuals' or 'off'), ``notes`` and ``smoother`` ({run: the primary
    smoother's hyperparameters}, runs with a single stage left out). Pure: the input is not modified.
    """
    cfg = settings_from(settings)
    m = normalize_metrics(metrics)
    frames = []
    notes: list[str] = []
    modes = set()
    smoothers = {}
    for run in pd.unique(m["run"].dropna()):
        out = _detect_run(m[m["run"] == run], str(run), cfg, (smoother or {}).get(str(run)))
        notes += [f"{run}: {n}" for n in out.attrs.get("notes", [])]
        modes.add(out.attrs.get("bootstrap", "off"))
        if "smoother" in out.attrs:
            smoothers[str(run)] = out.attrs["smoother"]
        frames.append(out)
    if not frames:
        return pd.DataFrame(columns=STAGE_COLUMNS)
    result = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    result.attrs = {"bootstrap": ",".join(sorted(modes)), "notes": notes, "smoother": smoothers}
    return result
