"""``calibrate_llc``: choose SGLD settings once, at a few checkpoints, and freeze them for a sweep.

Rule (REFERENCE.md §1.5):

1. nbeta is kept as given (``settings.nbeta``, default n/log n): it is part of what is measured.
2. gamma is searched from small to large over ``gammas`` (default delta * sqrt(nbeta) for delta in
   0.03, 0.1, 0.25): "Measured here", gamma biases the LLC downward through delta = gamma/sqrt(nbeta),
   so the smallest gamma that works is taken and delta above ``max_delta`` (0.25) is not tried at
   first. Real transformers often need far stronger localization (the papers: delta ~ 18 for the
   language model, ~ 0.8 for ICL regression; the quickstart: ~ 32), so when nothing passes, the
   default grid goes on with ``fallback_deltas`` (1, 3, 10, 30, 100): the values are then biased
   low in absolute terms and the choice says so, but they stay comparable across the checkpoints
   of a sweep, which share the frozen settings.
3. For each gamma, epsilon is scanned from large to small over ``epsilons``; the first (= largest)
   epsilon whose chains pass the sampler checks at **every** probed model is chosen. Sampler checks =
   every diagnostic except ``negative``: a negative LLC says w* is not a minimum (an early
   checkpoint), which no step size can change; it is recorded in the table, not used to choose.
   A probed model whose estimate is ``negative`` is therefore left out of the decision for that
   candidate (its chains descend, so its trend checks fail whatever the step size; e.g. step 0 of
   a run, the random initialization); at least one probed model must be at a minimum and pass.
   A run also must keep the mean drift step small next to the noise step: drift/noise ratio
   |(eps/2)(nbeta g + gamma (w - w*))| / |sqrt(eps) xi| <= ``max_drift_ratio`` (default 0.1) after
   burn-in. Why: near the stability limit SGLD's discretization (and, with minibatches, the gradient
   noise, which the drift carries) biases the LLC upward while the traces look perfectly healthy.
   For a quadratic basin the relative bias of the sampled variance is about ratio^2 (1% at 0.1).
   Measured on reduced-rank regression (5,3,5,0), true 6.5, full batch: ratio 0.49 / 0.35 / 0.24 /
   0.10 / 0.04 gave 9.67 / 8.42 / 7.36 / 6.69 / 6.82 (±0.1–0.4), i.e. +49% ... +3%: all were
   "healthy", only the ratio separates them.
4. The chosen epsilon is then divided by ``safety`` (default 1: none).

Cost: each candidate is first screened by a short run (``screen_steps`` steps, half burn-in) at the
last model (in a sweep the latest checkpoint, the likeliest to sit at a minimum, where the drift
ratio means what rule 3 says); a candidate that already goes non-finite or exceeds the drift ratio there is recorded
(``screened``) and skipped without the full-length runs.

Returns a :class:`CalibratedSettings`: an ``LLCSettings`` (use it wherever settings are expected)
that also carries ``.table`` (one dict per (gamma, epsilon, model) tried: llc, stderr, healthy,
reasons, drift/noise ratio, seconds) and ``.choice`` (a sentence saying why). Raises
:class:`CalibrationError` (with ``.table``) when no setting passes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

from pydantic import PrivateAttr
from torch import Tensor, nn

from devinterp.config import LLCSettings
from devinterp.llc.estimator import estimate_llc, resolve_settings

SAMPLER_CHECKS = ("nonfinite", "runaway", "rising", "falling", "rhat", "low_ess")
DEFAULT_EPSILONS = tuple(10 ** (-k / 4) for k in range(4, 29))  # 1e-1 ... 1e-7, factor 10**0.25
# A grid finer than sqrt(10) matters: the largest epsilon under the drift-ratio bound can sit just
# below a coarse grid point, and the next point down then mixes ~3x slower (too slow for R-hat).
DEFAULT_DELTAS = (0.03, 0.1, 0.25)
FALLBACK_DELTAS = (1.0, 3.0, 10.0, 30.0, 100.0)


class CalibrationError(RuntimeError):
    """No setting on the grid passed the sampler checks at every probed model; ``.table`` says what was tried."""

    def __init__(self, message: str, table: list[dict]):
        super().__init__(message)
        self.table = table


class CalibratedSettings(LLCSettings):
    """LLCSettings chosen by :func:`calibrate_llc`, with the calibration table attached (not serialized)."""

    _table: list[dict] = PrivateAttr(default_factory=list)
    _choice: str = PrivateAttr("")

    @property
    def table(self) -> list[dict]:
        """One row per (gamma, epsilon, model) run: the evidence behind the choice."""
        return self._table

    @property
    def choice(self) -> str:
        return self._choice

    def frozen(self) -> LLCSettings:
        """A plain :class:`LLCSettings` with the same values."""
        return LLCSettings.model_validate(self.model_dump())


def _sampler_failures(reasons: list[str]) -> list[str]:
    return [r for r in reasons if r.split(":")[0] in SAMPLER_CHECKS]


def calibrate_llc(
    models: nn.Module | Sequence[nn.Module],
    data: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    *,
    settings: LLCSettings | None = None,
    epsilons: Sequence[float] | None = None,
    gammas: Sequence[float] | None = None,
    max_delta: float = 0.25,
    fallback_deltas: Sequence[float] | None = FALLBACK_DELTAS,
    max_drift_ratio: float = 0.1,
    safety: float = 1.0,
    screen_steps: int = 200,
    n: int | None = None,
    device: Any = None,
    param_mask: dict | None = None,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> CalibratedSettings:
    """Search epsilon (and gamma) at ``models`` (e.g. first, middle and last checkpoints).

    models:    one model or a sequence; each is estimated with the same data and settings.
    data, loss_fn, n, device, param_mask: as for :func:`estimate_llc`.
    settings / **overrides: everything except epsilon and gamma (chains, draws, burnin, nbeta, seed...),
               used unchanged in the search, so the chosen settings are tested as they will be used.
    epsilons:  candidate step sizes (scanned largest first); default 1e-1 ... 1e-7, factor 10**0.25.
    gammas:    candidate localizations (tried smallest first); default delta*sqrt(nbeta), delta in
               (0.03, 0.1, 0.25). Candidates with gamma/sqrt(nbeta) > max_delta are dropped.
    fallback_deltas: with the default gammas only, the deltas tried (smallest first) when nothing on
               the first grid passes (see rule 2); None or () = none.
    max_drift_ratio: largest allowed mean drift/noise step ratio (see rule 3).
    safety:    divide the chosen epsilon by this (>= 1).
    screen_steps: length of the cheap screening run (0 = no screening).
    log:       optional callable receiving one line per run (e.g. ``print``).
    """
    base = resolve_settings(settings, overrides)
    models = [models] if isinstance(models, nn.Module) else list(models)
    if not models:
        raise ValueError("calibrate_llc needs at least one model")
    if safety < 1:
        raise ValueError(f"safety must be >= 1, got {safety}")
    eps_grid = sorted(set(epsilons if epsilons is not None else DEFAULT_EPSILONS), reverse=True)
    table: list[dict] = []

    # nbeta as the estimator will resolve it (cheap probe: one step, one draw)
    probe = estimate_llc(models[0], data, loss_fn, settings=base, n=n, device=device, param_mask=param_mask,
                         chains=1, draws=1, burnin=0, thin=1, init_loss_batches=1)
    nbeta = probe.nbeta
    gamma_grid = sorted(gammas) if gammas is not None else [d * math.sqrt(nbeta) for d in DEFAULT_DELTAS]
    gamma_grid = [g for g in gamma_grid if g / math.sqrt(nbeta) <= max_delta + 1e-12]
    if not gamma_grid:
        raise ValueError(f"no gamma with gamma/sqrt(nbeta) <= max_delta={max_delta} (nbeta={nbeta:.4g}); got {gammas}")
    strict_gammas = len(gamma_grid)
    if gammas is None and fallback_deltas:
        gamma_grid += [d * math.sqrt(nbeta) for d in sorted(fallback_deltas) if d > max_delta]

    for g_index, gamma in enumerate(gamma_grid):
        for eps in eps_grid:
            if screen_steps > 0:
                half = max(screen_steps // 2, 1)
                pre = estimate_llc(models[-1], data, loss_fn, settings=base, n=n, device=device, param_mask=param_mask,
                                   epsilon=eps, gamma=gamma, burnin=half, draws=half, thin=1)
                ratio = pre.diagnostics.get("drift_noise_ratio", float("nan"))
                nonfinite = any(r.startswith("nonfinite") for r in pre.reasons)
                if nonfinite or ratio > max_drift_ratio:
                    table.append({
                        "gamma": gamma, "delta": gamma / math.sqrt(nbeta), "epsilon": eps, "model": len(models) - 1,
                        "llc": pre.llc, "stderr": pre.stderr, "init_loss": pre.init_loss,
                        "mean_loss": float(pre.loss_trace.mean()), "healthy": False, "passed": False,
                        "reasons": "screened: " + ("non-finite" if nonfinite else f"drift/noise ratio {ratio:.3g} > {max_drift_ratio:g}")
                        + f" in a {2 * half}-step run",
                        "drift_noise_ratio": ratio, "rhat": float("nan"), "seconds": pre.seconds,
                    })
                    if log is not None:
                        log(f"gamma={gamma:.4g} eps={eps:.3g}: {table[-1]['reasons']}")
                    continue
            ok, judged = True, 0
            for i, model in enumerate(models):
                res = estimate_llc(model, data, loss_fn, settings=base, n=n, device=device, param_mask=param_mask,
                                   epsilon=eps, gamma=gamma)
                fails = _sampler_failures(res.reasons)
                ratio = res.diagnostics.get("drift_noise_ratio", float("nan"))
                not_a_minimum = any(r.startswith("negative") for r in res.reasons)
                if not_a_minimum:
                    fails = []  # no step size makes a descent stationary: this model cannot judge epsilon
                elif not fails and not ratio <= max_drift_ratio:
                    fails = [f"drift_ratio: drift/noise step ratio {ratio:.3g} > {max_drift_ratio:g} (epsilon too large)"]
                judged += not not_a_minimum
                table.append({
                    "gamma": gamma, "delta": gamma / math.sqrt(nbeta), "epsilon": eps, "model": i,
                    "llc": res.llc, "stderr": res.stderr, "init_loss": res.init_loss,
                    "mean_loss": float(res.loss_trace.mean()), "healthy": res.healthy,
                    "passed": None if not_a_minimum else not fails,
                    "reasons": ("not at a minimum, left out: " if not_a_minimum else "")
                    + "; ".join(res.reasons + [f for f in fails if f not in res.reasons]),
                    "drift_noise_ratio": ratio,
                    "rhat": res.diagnostics.get("rhat", float("nan")), "seconds": res.seconds,
                })
                if log is not None:
                    r = table[-1]
                    verdict = ("not at a minimum (left out)" if not_a_minimum else
                               "ok" if not fails else "; ".join(f.split(":")[0] for f in fails))
                    log(f"gamma={gamma:.4g} eps={eps:.3g} model={i}: llc={r['llc']:.4g}±{r['stderr']:.2g} "
                        f"ratio={r['drift_noise_ratio']:.3g} {verdict}")
                if fails:
                    ok = False
                    break
            if ok and judged:
                chosen_eps = eps / safety
                out = CalibratedSettings.model_validate({**base.model_dump(), "epsilon": chosen_eps, "gamma": gamma})
                out._table = table
                out._choice = (
                    f"epsilon={chosen_eps:.3g} (largest of {len(eps_grid)} tried whose chains passed the sampler checks and "
                    + (f"drift-ratio limit at all {len(models)} models" if judged == len(models) else
                       f"drift-ratio limit at the {judged} of {len(models)} models at a minimum "
                       f"({len(models) - judged} not at one, left out)") +
                    f"{', divided by safety ' + str(safety) if safety != 1 else ''}),"
                    f" gamma={gamma:.4g} (smallest passing; delta=gamma/sqrt(nbeta)={gamma / math.sqrt(nbeta):.3g}),"
                    f" nbeta={nbeta:.4g}"
                )
                if g_index >= strict_gammas:
                    out._choice += (f"; no gamma with delta <= {max_delta:g} passed, so this stronger localization "
                                    "biases the absolute LLC low: compare values across checkpoints, not with theory")
                return out
    raise CalibrationError(
        f"no (epsilon, gamma) on the grid passed the sampler checks at all {len(models)} models "
        f"(epsilons {eps_grid[0]:.3g}..{eps_grid[-1]:.3g}, gammas {[round(g, 4) for g in gamma_grid]}); "
        "try more burnin/draws, smaller epsilons or larger gammas; see .table for the reasons",
        table,
    )
