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
   2b. The fallback grid is searched by bisection (middle delta first; a failure moves up, a pass
   down), since a gamma that fails implies every smaller gamma fails: the equilibrium posterior
   only widens as gamma falls (the locality check), and the shortest relaxation time a stable,
   low-drift step size allows, 2/(eps*gamma) with eps ~ 1/(nbeta*curvature + gamma), only grows
   (the mixing checks). On the quickstart and the ICL run (delta 30 chosen) this tries 10 and 30
   instead of 1, 3, 10 and 30.
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
   Two skips save full-length runs that would fail (recorded as ``skipped``, with the reason):
   *Stability margin*: an epsilon within ``divergence_margin`` (default 2) of one whose full-length
   chains went non-finite at the same gamma. Divergence is a rare event whose chance grows with the
   chain-steps run (long chains reach the tails of the flat directions, where the loss is stiffer),
   so an epsilon next to a diverging one can survive the calibration run and diverge in the next.
   Measured: normal crossing (1,2), gamma 0.361, 16 chains x 9,000 steps: eps 0.00562 diverged,
   eps 0.00316 passed at the calibration's seed but diverged at 2 of 6 seeds. (A divergence within
   the short screening run does not count: it marks violent instability, while the edge that
   matters is the one at the estimate's own length.)
   *Predicted drift ratio*: in a quadratic basin ratio = sqrt(eps * curvature)/2, and where a smaller
   step also spreads the chains less into stiff regions within the same length it falls faster
   (measured up to ~ eps^0.9), so ratio_run * eps / eps_run, from the full-length runs at larger
   epsilons of the same gamma, is a lower bound; an epsilon where it exceeds the limit is skipped.
   The 200-step screen underestimates the ratio where chains spread slowly into stiffer regions
   (RRR (4,3,8,0), gamma 0.361, eps 5.6e-4: below 0.1 in the screen, 0.25 over 9,000 steps).
   *Locality across the probes* (:mod:`devinterp.locality`): a candidate that passes at every probed
   model is still rejected when the chains' mean loss E[L] = L_n(w*) + llc/nbeta does not follow
   L_n(w*) between two probes whose L_n(w*) differ by at least half of the range of the probes at
   a minimum (not every probe's, the sweep's rule: a probe off a minimum far above the others would
   then leave the pairs that see forgetting unjudged; on the Gaussian wells with a hill,
   test_calibration_search_shortcuts_change_nothing_they_skip, that rule chose delta 0.03, where both
   wells' chains sat on the plateau, mean loss 1.0 at L_n(w*) 0.7 and 0.5): slope
   significantly below 1/2 (the chains keep less than half of the loss difference, i.e. they have
   spread past the basin into a region both checkpoints share). Every trace is stationary there,
   so no per-model check sees it. Its threshold z is fixed up front from every probe's L_n(w*).
   The equilibrium posterior depends on gamma (and nbeta), not on epsilon, so the rest of that
   gamma's epsilons are skipped and the next gamma is tried. Measured on the quickstart: at
   delta 0.1 the chains sat at 4.34-4.37 nats at every probe while L_n(w*) went 4.16 -> 3.12
   (slope -0.02); the hand-picked delta 32 gives 0.88. A single probed model (or probes with equal
   L_n(w*)) cannot be judged this way and is not.
4. The chosen epsilon is then divided by ``safety`` (default 1: none).
5. Burn-in and draws follow the chain's slowest relaxation time (the relaxation rule, below), at
   every candidate: each is judged with the chain length it would be used with. Applied only after
   the search, candidates would be judged on far shorter chains: at a small epsilon they barely move
   and can pass with a value far from equilibrium, and at a larger one a slow direction still
   relaxing fails ``rising`` and pushes the search to smaller epsilons, which relax more slowly still.

Relaxation rule (burn-in and draws). Along a direction where L_n is flat, only the localization
acts: w - w* follows an Ornstein-Uhlenbeck process whose mean decays by (1 - eps*gamma/2) per step,
time constant **tau = 2/(eps*gamma)** steps. Loss curvature (a positive semi-definite Hessian) only
adds to the restoring force, so tau bounds the relaxation time of every linear mode; singular
models always have such flat directions. Per candidate (eps, gamma):

* burn-in = ``burnin_taus`` * tau (c, default ln 20 = 3.0): the offset left at the first draw is
  at most e^-c of the initial one (second moments, which chains started at w* must build up, relax
  twice as fast: e^-2c). c = ln(2 / TREND_EFFECT): the offset left is half the 10% drift the trend
  check tolerates (the accuracy asked of an LLC), and its mean over draws spanning k*tau is
  <= e^-c/k = 1%.
* draws * thin = ``draws_taus`` * tau (k, default 5): the integrated autocorrelation time of the
  slow coordinate's square (what the loss sees; OU correlation e^(-2t/tau)) is tau, so each chain
  holds about k independent draws along the slowest direction; k = ESS_MIN = 5 is the floor of the
  ``low_ess`` check, below which the trend and R-hat checks cannot tell that direction's wander
  from non-stationarity. (The loss trace's own autocorrelation time does not show this direction:
  on normal crossing (1,2) it measured ~14 steps against tau = 3,100, while the LLC over steps
  500-1,500 was 0.205 against 0.254 at equilibrium.)
* Both only lengthen the configured burnin/draws, and together they are capped at
  ``max_length_factor`` (default 4) x the configured burnin + draws*thin: the rule wants 8 tau,
  and where that exceeds the cap both are scaled down by the same factor (the choice and the table
  say so and give the worst-case offset e^-(burnin/tau) left). The cap is a budget: the rule never
  makes an estimate more than that factor as expensive as configured. 1 (or c = k = 0) turns the
  rule off.
* Because tau grows as epsilon shrinks, a capped candidate that fails a mixing check (rising,
  falling, rhat, low_ess) with its drift/noise ratio within the limit ends the scan of that gamma:
  every smaller epsilon relaxes even less within the same cap (recorded as ``skipped``). Uncapped,
  smaller epsilons get proportionally longer chains and are still tried. Without this, a small
  epsilon whose chains barely move can pass the checks with a value far from the equilibrium one
  (BENCHMARKS.md, icl-regression: LLC 54 at eps 3e-5 against 300 at 3e-4, with 200-step chains and
  gamma 0.36, i.e. tau >= 10^4 steps).

Cost of the rule: the analytic tests (delta = 0.03, weak localization) have tau = 1,000-175,000
steps at their calibrated (eps, gamma), so the cap binds there (6,000 steps for 1,500 configured);
the quickstart's hand-picked eps 3e-5, gamma 1000 (tau = 67) would want 200 + 334 steps for 50 + 100
configured (3.6x, under the cap), and its calibration (six probes, pairwise locality) chooses eps
3.16e-5, gamma 948.7 (tau = 67): 200 + 334 (BENCHMARKS.md); the paper's ICL eps 3e-4, gamma 6.67 (tau =
1,000) would want 3,000 + 5,000 for 200 + 200, capped at 1,600 (burn-in 599 = 0.6 tau, draws 1 tau),
where the calibrated eps 1e-4, gamma 245 (tau = 82) takes 245 + 409.

Cost of the search: each candidate is first screened by a short run (``screen_steps`` steps, half
burn-in) at the last model (in a sweep the latest checkpoint, the likeliest to sit at a minimum, where the drift
ratio means what rule 3 says); a candidate that already goes non-finite or exceeds the drift ratio there is recorded
(``screened``) and skipped without the full-length runs. The full-length runs go through the probes
in the order highest L_n(w*), lowest, second highest, ... (each probe's L_n(w*) is taken once, up
front), so the locality check's extremes are known early and a gamma that fails it is left after
those runs instead of all of them (the remaining probes lie between the two and cannot change the
verdict). Two more shortcuts:

* At each gamma after the first, the scan starts at the largest epsilon that passed the screen at
  the previous (smaller) gamma (one ``skipped`` row says so): in a basin with Hessian H the
  stability limit 2/lambda_max(nbeta H + gamma) and the drift/noise ratio ~ sqrt(eps * mean
  eigenvalue of (nbeta H + gamma))/2 only get worse as gamma grows, so the larger epsilons would
  fail the screen again. (Quickstart: the first epsilon to pass fell 1.8e-3, 1e-3, 3.2e-4, 1e-4
  over delta 0.25, 1, 3, 10.)
* A probe found off a minimum (``negative``) at every earlier full-length run that stayed finite
  goes last, and the early locality verdict does not wait for it: it was left out at every
  candidate so far (step 0 of a run is the usual case, never at a minimum), so running it first
  cost one run per rejected candidate. It still runs, last, at a candidate that passes everything
  else, and joins the locality check there if it is at a minimum after all.

Returns a :class:`CalibratedSettings`: an ``LLCSettings`` (use it wherever settings are expected)
that also carries ``.table`` (one dict per (gamma, epsilon, model) tried: llc, stderr, healthy,
reasons, drift/noise ratio, burnin, draws, tau, capped, seconds) and ``.choice`` (a sentence saying
why). Its burnin and draws are the rule's, frozen for the sweep like epsilon and gamma. Raises
:class:`CalibrationError` (with ``.table``) when no setting passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from pydantic import PrivateAttr
from torch import Tensor, nn

from devinterp.config import LLCSettings
from devinterp.llc.diagnostics import ESS_MIN, TREND_EFFECT
from devinterp.llc.estimator import estimate_llc, resolve_settings
from devinterp.locality import judged_pairs, locality, pairs_z

SAMPLER_CHECKS = ("nonfinite", "runaway", "rising", "falling", "rhat", "low_ess")
DEFAULT_EPSILONS = tuple(10 ** (-k / 4) for k in range(4, 29))  # 1e-1 ... 1e-7, factor 10**0.25
# A grid finer than sqrt(10) matters: the largest epsilon under the drift-ratio bound can sit just
# below a coarse grid point, and the next point down then mixes ~3x slower (too slow for R-hat).
DEFAULT_DELTAS = (0.03, 0.1, 0.25)
FALLBACK_DELTAS = (1.0, 3.0, 10.0, 30.0, 100.0)
BURNIN_TAUS = math.log(2 / TREND_EFFECT)  # c = ln 20 = 3.0: offset left at the first draw <= TREND_EFFECT / 2
DRAWS_TAUS = ESS_MIN  # k = 5: about ESS_MIN independent draws per chain along the slowest direction
MAX_LENGTH_FACTOR = 4.0  # the rule lengthens chains to at most 4x the configured burnin + draws*thin
MIXING_CHECKS = ("rising", "falling", "rhat", "low_ess")


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


def relaxation_time(epsilon: float, gamma: float) -> float:
    """tau = 2/(epsilon*gamma) SGLD steps: the time constant of the localization's pull along a
    direction where the loss is flat (the slowest linear mode); inf when gamma = 0."""
    return 2.0 / (epsilon * gamma) if gamma > 0 else math.inf


def relaxation_lengths(settings: LLCSettings, epsilon: float, gamma: float, *, burnin_taus: float = BURNIN_TAUS,
                       draws_taus: float = DRAWS_TAUS, max_length_factor: float = MAX_LENGTH_FACTOR) -> dict:
    """The relaxation rule (module docstring): burn-in c*tau, draws*thin k*tau, never shorter than
    ``settings``' burnin/draws, the two together capped at ``max_length_factor`` x the configured
    burnin + draws*thin (both scaled down by the same factor when the rule wants more).

    Returns {burnin, draws, tau, capped, wanted_steps, cap_steps}; ``capped`` is True when the cap
    cut what the rule wanted.
    """
    if burnin_taus < 0 or draws_taus < 0:
        raise ValueError(f"burnin_taus and draws_taus must be >= 0, got {burnin_taus}, {draws_taus}")
    if max_length_factor < 1:
        raise ValueError(f"max_length_factor must be >= 1, got {max_length_factor}")
    tau = relaxation_time(epsilon, gamma)
    thin = settings.thin
    given = settings.burnin + settings.draws * thin
    cap = math.floor(max_length_factor * given)
    out = {"burnin": settings.burnin, "draws": settings.draws, "tau": tau, "capped": False,
           "wanted_steps": math.nan, "cap_steps": cap}
    if max_length_factor == 1 or burnin_taus + draws_taus == 0:
        return out  # rule off
    want_b, want_d = burnin_taus * tau, draws_taus * tau  # steps (inf when gamma = 0)
    out["wanted_steps"] = want_b + want_d
    scale = 1.0
    if want_b + want_d > cap:
        scale, out["capped"] = cap / (burnin_taus + draws_taus) / tau if math.isfinite(tau) else 0.0, True
    if math.isfinite(tau):
        b, d = want_b * scale, want_d * scale
    else:  # no localization: the whole cap, split c : k
        b, d = cap * burnin_taus / (burnin_taus + draws_taus), cap * draws_taus / (burnin_taus + draws_taus)
    rnd = math.floor if out["capped"] else math.ceil  # capped: stay within the cap
    out["burnin"] = max(settings.burnin, rnd(b))
    out["draws"] = max(settings.draws, rnd(d / thin))
    return out


def probe_order(init_losses: Sequence[float]) -> list[int]:
    """Indices of the probed models in the order their full runs go: highest L_n(w*), lowest,
    second highest, second lowest, ... so that the locality check's extremes (the judged models
    with the highest and lowest L_n(w*)) are known after as few runs as possible."""
    ranked = sorted(range(len(init_losses)), key=lambda i: (-init_losses[i], i))
    out = []
    while ranked:
        out.append(ranked.pop(0))
        if ranked:
            out.append(ranked.pop())
    return out


def settled_locality(at_minimum: list, pending_init_losses: Sequence[float], nbeta: float,
                     z: float | None = None):
    """:func:`~devinterp.locality.locality` of the judged models so far ((index, LLCResult) pairs),
    but only once no model still to run has an L_n(w*) outside their range (the range sets which
    pairs are judged; models inside it can only add pairs, so a failure is then final); else None.
    ``z``: the threshold, fixed in advance (e.g. from every probe's L_n(w*)) so that later models
    cannot change it."""
    if len(at_minimum) < 2:
        return None
    losses = [r.init_loss for _, r in at_minimum]
    if any(not (min(losses) <= x <= max(losses)) for x in pending_init_losses):
        return None
    return locality(losses, [r.llc for _, r in at_minimum], [r.total_stderr for _, r in at_minimum], nbeta,
                    labels=[f"model {i}" for i, _ in at_minimum], z=z)


def _lengths_text(lengths: dict, settings: LLCSettings, burnin_taus: float, draws_taus: float,
                  max_length_factor: float) -> str:
    """How the relaxation rule set burnin/draws, for ``.choice``."""
    tau, b, d = lengths["tau"], lengths["burnin"], lengths["draws"]
    if math.isnan(lengths["wanted_steps"]):
        return f"burnin={b}, draws={d} (as configured; relaxation rule off)"
    text = f"burnin={b}, draws={d}"
    if b == settings.burnin and d == settings.draws:
        return text + (f" (as configured: the relaxation rule, {burnin_taus:.3g} + {draws_taus:.3g} x tau = "
                       f"2/(eps*gamma) = {tau:.4g} steps, asks for no more)")
    text += (f" (relaxation rule: tau = 2/(eps*gamma) = {tau:.4g} steps; burn-in {burnin_taus:.3g} tau, "
             f"draws {draws_taus:.3g} tau")
    if lengths["capped"]:
        frac = b / tau if math.isfinite(tau) else 0.0
        text += (f", capped at max_length_factor {max_length_factor:g} x the configured "
                 f"{settings.burnin + settings.draws * settings.thin} steps = {lengths['cap_steps']} steps per chain, "
                 f"so burn-in is {frac:.2g} tau (worst-case offset left e^-{frac:.2g} = {math.exp(-frac):.0%}) "
                 f"and the draws span {d * settings.thin / tau if math.isfinite(tau) else 0.0:.2g} tau")
    return text + ")"


def _bisect_fallback(gammas: list[float], try_gamma: Callable[[float], "CalibratedSettings | None"],
                     nbeta: float, table: list[dict], log: Callable[[str], None] | None) -> "CalibratedSettings | None":
    """The smallest of the ascending fallback ``gammas`` that passes, found by bisection: a gamma
    that fails implies every smaller one fails (rule 2b), so a failure moves the search up and a
    pass moves it down. Returns the passing settings (their choice says which deltas were tried)
    or None. Table rows (no gamma) name the fallback deltas never tried, and why."""
    lo, hi, best, tried = -1, len(gammas), None, []
    while hi - lo > 1:
        mid = (lo + hi) // 2
        tried.append(mid)
        out = try_gamma(gammas[mid])
        if out is not None:
            best, hi = out, mid
        else:
            lo = mid
    delta = [g / math.sqrt(nbeta) for g in gammas]
    skipped = (
        ([i for i in range(lo) if i not in tried], f"a weaker localization cannot pass where delta "
                                                    f"{delta[lo]:.3g} failed" if lo >= 0 else ""),
        ([i for i in range(hi + 1, len(gammas)) if i not in tried], f"delta {delta[hi]:.3g} passed and the "
                                                                      "smallest passing is taken" if best else ""),
    )
    for indices, why in skipped:
        if indices:
            table.append({"gamma": None, "delta": None, "epsilon": None, "model": None, "healthy": False,
                          "passed": False, "reasons": f"skipped: delta {', '.join(f'{delta[i]:.3g}' for i in indices)}"
                                                      f" of the fallback grid (bisection: {why})"})
            if log is not None:
                log(table[-1]["reasons"])
    if best is not None:
        best._choice += ("; fallback deltas tried by bisection: "
                         + ", ".join(f"{gammas[i] / math.sqrt(nbeta):.3g}" for i in tried))
    return best


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
    divergence_margin: float = 2.0,
    burnin_taus: float = BURNIN_TAUS,
    draws_taus: float = DRAWS_TAUS,
    max_length_factor: float = MAX_LENGTH_FACTOR,
    n: int | None = None,
    device: Any = None,
    param_mask: dict | None = None,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> CalibratedSettings:
    """Search epsilon (and gamma) at ``models`` (e.g. first, middle and last checkpoints).

    models:    one model or a sequence; each is estimated with the same data and settings.
    data, loss_fn, n, device, param_mask: as for :func:`estimate_llc`.
    settings / **overrides: everything except epsilon and gamma (chains, nbeta, seed...), used unchanged
               in the search, so the chosen settings are tested as they will be used; burnin and
               draws are the floor the relaxation rule lengthens (per candidate, in the search too).
    epsilons:  candidate step sizes (scanned largest first); default 1e-1 ... 1e-7, factor 10**0.25.
    gammas:    candidate localizations (tried smallest first); default delta*sqrt(nbeta), delta in
               (0.03, 0.1, 0.25). Candidates with gamma/sqrt(nbeta) > max_delta are dropped.
    fallback_deltas: with the default gammas only, the deltas searched (by bisection, rule 2b) when
               nothing on the first grid passes (see rule 2); None or () = none.
    max_drift_ratio: largest allowed mean drift/noise step ratio (see rule 3).
    safety:    divide the chosen epsilon by this (>= 1).
    screen_steps: length of the cheap screening run (0 = no screening).
    divergence_margin: an epsilon within this factor of one whose chains diverged (non-finite) at the
               same gamma is skipped (see rule 3; 1 = no margin).
    burnin_taus, draws_taus: c and k of the relaxation rule: burn-in c*tau, draws*thin k*tau with
               tau = 2/(epsilon*gamma) (default c = ln 20 = 3.0, k = 5; module docstring).
    max_length_factor: the rule's cap: burnin + draws*thin at most this x the configured (default 4;
               1 = rule off, burnin/draws as given).
    log:       optional callable receiving one line per run (e.g. ``print``).
    """
    base = resolve_settings(settings, overrides)
    models = [models] if isinstance(models, nn.Module) else list(models)
    if not models:
        raise ValueError("calibrate_llc needs at least one model")
    if safety < 1:
        raise ValueError(f"safety must be >= 1, got {safety}")
    if divergence_margin < 1:
        raise ValueError(f"divergence_margin must be >= 1, got {divergence_margin}")
    rule = dict(burnin_taus=burnin_taus, draws_taus=draws_taus, max_length_factor=max_length_factor)
    relaxation_lengths(base, 1.0, 1.0, **rule)  # validates the rule's parameters before any run
    search = _Search(models, data, loss_fn, base, dict(n=n, device=device, param_mask=param_mask), rule,
                     eps_grid=sorted(set(epsilons if epsilons is not None else DEFAULT_EPSILONS), reverse=True),
                     max_drift_ratio=max_drift_ratio, safety=safety, screen_steps=screen_steps,
                     divergence_margin=divergence_margin, max_delta=max_delta, log=log)
    nbeta = search.nbeta
    gamma_grid = sorted(gammas) if gammas is not None else [d * math.sqrt(nbeta) for d in DEFAULT_DELTAS]
    gamma_grid = [g for g in gamma_grid if g / math.sqrt(nbeta) <= max_delta + 1e-12]
    if not gamma_grid:
        raise ValueError(f"no gamma with gamma/sqrt(nbeta) <= max_delta={max_delta} (nbeta={nbeta:.4g}); got {gammas}")
    fallback = ([d * math.sqrt(nbeta) for d in sorted(fallback_deltas) if d > max_delta]
                if gammas is None and fallback_deltas else [])

    for gamma in gamma_grid:  # rule 2: smallest gamma first
        chosen = search.try_gamma(gamma, fallback=False)
        if chosen is not None:
            return chosen
    chosen = _bisect_fallback(fallback, lambda g: search.try_gamma(g, fallback=True), nbeta, search.table, log)
    if chosen is not None:
        return chosen
    raise CalibrationError(
        f"no (epsilon, gamma) on the grid passed the sampler checks at all {len(models)} models "
        "and the locality check across them "
        f"(epsilons {search.eps_grid[0]:.3g}..{search.eps_grid[-1]:.3g}, gammas "
        f"{[round(g, 4) for g in gamma_grid + fallback]}); "
        "try more burnin/draws (or a larger max_length_factor), smaller epsilons or larger gammas; "
        "see .table for the reasons"
        + (f". The strongest localization that passed every sampler check and failed only the locality check: "
           f"{search.locality_only[1]}. "
           "Where the pair spans a transition, a steep real LLC rise reads the same as forgetting (slope "
           "below 1/2 = the LLC rose more than nbeta x half the loss gap); if the chains' mean losses stay "
           "distinct and below the untrained model's, you may judge it a real rise and fix these settings "
           "(sweep.llc, with calibrate: off)" if search.locality_only else ""),
        search.table,
    )


class _Search:
    """One calibration's state across its candidates (rule 3 and the search shortcuts of the module
    docstring): the probed models and their L_n(w*) (taken once, up front: one step, one draw), the
    run order and locality threshold they fix, the table of every run, the largest epsilon that
    passed the screen at each gamma tried, and how often each probe was found off a minimum."""

    def __init__(self, models: list[nn.Module], data, loss_fn, base: LLCSettings, estimate_kw: dict, rule: dict, *,
                 eps_grid: list[float], max_drift_ratio: float, safety: float, screen_steps: int,
                 divergence_margin: float, max_delta: float, log: Callable[[str], None] | None):
        self.models, self.data, self.loss_fn, self.base = models, data, loss_fn, base
        self.estimate_kw, self.rule, self.eps_grid, self.log = estimate_kw, rule, eps_grid, log
        self.max_drift_ratio, self.safety, self.screen_steps = max_drift_ratio, safety, screen_steps
        self.divergence_margin, self.max_delta = divergence_margin, max_delta
        self.table: list[dict] = []
        self.probes = [self.estimate(m, chains=1, draws=1, burnin=0, thin=1) for m in models]
        self.nbeta = self.probes[0].nbeta  # as the estimator resolves it
        # the full runs go in an order that settles the locality check's extremes early
        self.order = probe_order([p.init_loss for p in self.probes])
        # the locality check's threshold, for the pairs every probe's L_n(w*) would give: fixed now, so
        # a verdict reached before all probes have run stays final
        self.local_z = pairs_z(len(judged_pairs([p.init_loss for p in self.probes])))
        self.screen_passes: dict[float, float] = {}  # gamma tried -> the largest epsilon that passed its screen
        # (gamma, description) of the strongest candidate so far that failed only the locality check
        self.locality_only: tuple[float, str] | None = None
        self.runs_at = [0] * len(models)  # finite full-length runs per probed model so far
        self.off_minimum_at = [0] * len(models)  # ... of which found it not at a minimum

    def estimate(self, model: nn.Module, **settings):
        return estimate_llc(model, self.data, self.loss_fn, settings=self.base, **self.estimate_kw, **settings)

    def delta(self, gamma: float) -> float:
        return gamma / math.sqrt(self.nbeta)

    def record(self, row: dict, where: str) -> None:
        """Append ``row`` to the table and log its reasons, prefixed by ``where``."""
        self.table.append(row)
        if self.log is not None:
            self.log(f"{where}: {row['reasons']}")

    def run_row(self, gamma: float, eps: float, model: int, res, lengths: dict, **fields) -> dict:
        """The table row of one run (screen or full length) of ``model``."""
        return {
            "gamma": gamma, "delta": self.delta(gamma), "epsilon": eps, "model": model,
            "llc": res.llc, "stderr": res.stderr, "init_loss": res.init_loss,
            "mean_loss": float(res.loss_trace.mean()),
            "drift_noise_ratio": res.diagnostics.get("drift_noise_ratio", float("nan")),
            "rhat": res.diagnostics.get("rhat", float("nan")), "seconds": res.seconds,
            "burnin": lengths["burnin"], "draws": lengths["draws"], "tau": lengths["tau"],
            "capped": lengths["capped"], **fields,
        }

    def no_run_row(self, gamma: float, eps: float, reasons: str, lengths: dict | None = None,
                   healthy: bool = False) -> dict:
        """The table row of a candidate decided without a run of its own (skipped, rejected)."""
        row = {"gamma": gamma, "delta": self.delta(gamma), "epsilon": eps, "model": None, "healthy": healthy,
               "passed": False}
        if lengths is not None:
            row.update(burnin=lengths["burnin"], draws=lengths["draws"], tau=lengths["tau"], capped=lengths["capped"])
        return {**row, "reasons": reasons}

    def try_gamma(self, gamma: float, fallback: bool) -> CalibratedSettings | None:
        """Scan epsilon at ``gamma``, largest first (rule 3); the chosen settings, or None when nothing
        passes. ``fallback``: gamma is on the fallback grid (the choice then says the LLC is biased low)."""
        scan = _GammaScan()
        above = self._above_screen_ceiling(gamma)
        for e_index, eps in enumerate(self.eps_grid):
            if eps in above:
                continue
            lengths = relaxation_lengths(self.base, eps, gamma, **self.rule)
            if self.screen_steps > 0:
                if not self._screen(gamma, eps, lengths):
                    continue
                if scan.first_screen_pass is None:
                    scan.first_screen_pass = eps
            skip = self._skip_reason(eps, scan)
            if skip:
                self.record(self.no_run_row(gamma, eps, "skipped: " + skip, lengths),
                            f"gamma={gamma:.4g} eps={eps:.3g}")
                continue
            verdict = self._full_runs(gamma, eps, lengths, scan)
            if verdict.ok and verdict.judged:
                local = verdict.local
                if local is None:  # not settled early (e.g. a left-out probe was still pending): now it is
                    local = settled_locality(verdict.at_minimum, [], self.nbeta, self.local_z)
                if local is not None and not local.ok:
                    self._reject_on_locality(gamma, eps, lengths, local, verdict)
                    break  # the posterior is set by gamma, not epsilon: go on to a larger gamma
                return self._chosen(gamma, eps, lengths, verdict.judged, local, fallback)
            if verdict.mixing and lengths["capped"] and e_index + 1 < len(self.eps_grid):
                rest = self.eps_grid[e_index + 1:]
                self.record(self.no_run_row(
                    gamma, rest[0],
                    f"skipped: epsilon {rest[0]:.3g} ... {rest[-1]:.3g} ({len(rest)} values) at this gamma, "
                    f"since eps={eps:.3g} failed a mixing check with chains capped at "
                    f"{lengths['burnin'] + lengths['draws'] * self.base.thin} steps (tau = {lengths['tau']:.4g}); "
                    "smaller epsilons relax even less within the same cap"), f"gamma={gamma:.4g}")
                break
        if scan.first_screen_pass is not None:
            self.screen_passes[gamma] = scan.first_screen_pass
        return None

    def _above_screen_ceiling(self, gamma: float) -> list[float]:
        """The epsilons above the largest that passed the screen at the largest smaller gamma tried so
        far (a stronger localization only stiffens the posterior); recorded as one skipped row."""
        below = [g for g in self.screen_passes if g < gamma]
        if not below:
            return []
        ceiling = self.screen_passes[max(below)]
        above = [e for e in self.eps_grid if e > ceiling * (1 + 1e-9)]
        if above:
            self.record(self.no_run_row(
                gamma, above[0],
                f"skipped: epsilon {above[0]:.3g} ... {above[-1]:.3g} ({len(above)} values) at this gamma, "
                f"above {ceiling:.3g}, the largest that passed the screen at a smaller gamma "
                "(a stronger localization only stiffens the posterior: stability limit and drift/noise "
                "ratio cannot improve)"), f"gamma={gamma:.4g}")
        return above

    def _screen(self, gamma: float, eps: float, lengths: dict) -> bool:
        """The short run at the last model (half burn-in); False (and a ``screened`` row) when it went
        non-finite or its drift/noise ratio is over the limit."""
        half = max(self.screen_steps // 2, 1)
        pre = self.estimate(self.models[-1], epsilon=eps, gamma=gamma, burnin=half, draws=half, thin=1)
        ratio = pre.diagnostics.get("drift_noise_ratio", float("nan"))
        nonfinite = any(r.startswith("nonfinite") for r in pre.reasons)
        if not (nonfinite or ratio > self.max_drift_ratio):
            return True
        why = "non-finite" if nonfinite else f"drift/noise ratio {ratio:.3g} > {self.max_drift_ratio:g}"
        self.record(self.run_row(gamma, eps, len(self.models) - 1, pre,
                                 {**lengths, "burnin": half, "draws": half, "capped": False},
                                 healthy=False, passed=False, reasons=f"screened: {why} in a {2 * half}-step run"),
                    f"gamma={gamma:.4g} eps={eps:.3g}")
        return False

    def _skip_reason(self, eps: float, scan: "_GammaScan") -> str | None:
        """Why ``eps`` need not run at full length, from the full-length runs at larger epsilons of this
        gamma (stability margin, predicted drift ratio: rule 3), or None."""
        edge = [d for d in scan.diverged if d <= self.divergence_margin * eps]
        if edge:
            return (f"within a factor {self.divergence_margin:g} of epsilon {min(edge):.3g}, whose chains diverged "
                    "at this gamma (stability edge)")
        # drift/noise ratio ~ sqrt(eps * curvature)/2, falling faster where smaller steps also spread the
        # chains less into stiff regions: ratio * eps / eps_run (the optimistic end) is a lower bound
        predicted = max((r * eps / e for e, r in scan.ratios), default=0.0)
        if predicted > self.max_drift_ratio:
            return (f"drift/noise ratio predicted {predicted:.3g} > {self.max_drift_ratio:g} from the full-length "
                    "runs at larger epsilons (x eps/eps_run)")
        return None

    def _full_runs(self, gamma: float, eps: float, lengths: dict, scan: "_GammaScan") -> "_Verdict":
        """Run the probes at full length in the search's order (those found off a minimum at every
        earlier run last), stopping at the first failure or once the locality check has failed for good."""
        run = {"burnin": lengths["burnin"], "draws": lengths["draws"]}
        # probes found off a minimum at every earlier full-length run go last: they were left out at
        # every candidate so far, and running them first would cost a run per rejected candidate
        presumed_off = {i for i in range(len(self.models)) if self.runs_at[i] and self.off_minimum_at[i] == self.runs_at[i]}
        run_order = [i for i in self.order if i not in presumed_off] + [i for i in self.order if i in presumed_off]
        verdict = _Verdict(presumed_off=bool(presumed_off))
        for pos, i in enumerate(run_order):
            verdict.runs = pos + 1
            res = self.estimate(self.models[i], epsilon=eps, gamma=gamma, **run)
            fails = _sampler_failures(res.reasons)
            ratio = res.diagnostics.get("drift_noise_ratio", float("nan"))
            not_a_minimum = any(r.startswith("negative") for r in res.reasons)
            if not_a_minimum:
                fails = []  # no step size makes a descent stationary: this model cannot judge epsilon
            elif not fails and not ratio <= self.max_drift_ratio:
                fails = [f"drift_ratio: drift/noise step ratio {ratio:.3g} > {self.max_drift_ratio:g} (epsilon too large)"]
            verdict.judged += not not_a_minimum
            if not any(r.startswith("nonfinite") for r in res.reasons):  # a diverged run says nothing of w*
                self.runs_at[i] += 1
                self.off_minimum_at[i] += not_a_minimum
            if not not_a_minimum:
                verdict.at_minimum.append((i, res))
            if any(f.startswith("nonfinite") for f in fails):
                scan.diverged.append(eps)
            if math.isfinite(ratio) and not not_a_minimum:  # a descending chain's ratio says nothing of eps
                scan.ratios.append((eps, ratio))
            # a mixing failure says "too slow" only where the step size itself was acceptable
            verdict.mixing = verdict.mixing or (
                ratio <= self.max_drift_ratio and any(f.split(":")[0] in MIXING_CHECKS for f in fails))
            self.table.append(self.run_row(
                gamma, eps, i, res, lengths, healthy=res.healthy, passed=None if not_a_minimum else not fails,
                reasons=("not at a minimum, left out: " if not_a_minimum else "")
                + "; ".join(res.reasons + [f for f in fails if f not in res.reasons])))
            if self.log is not None:
                r = self.table[-1]
                outcome = ("not at a minimum (left out)" if not_a_minimum else
                           "ok" if not fails else "; ".join(f.split(":")[0] for f in fails))
                self.log(f"gamma={gamma:.4g} eps={eps:.3g} model={i} burnin={run['burnin']} draws={run['draws']}"
                         f"{' (capped)' if lengths['capped'] else ''}: llc={r['llc']:.4g}±{r['stderr']:.2g} "
                         f"ratio={r['drift_noise_ratio']:.3g} {outcome}")
            if fails:
                verdict.ok = False
                break
            pending = [j for j in run_order[pos + 1:] if j not in presumed_off]
            verdict.local = settled_locality(verdict.at_minimum, [self.probes[j].init_loss for j in pending],
                                             self.nbeta, self.local_z)
            if verdict.local is not None and not verdict.local.ok:
                break  # the rest of the probes cannot change the verdict
        return verdict

    def _reject_on_locality(self, gamma: float, eps: float, lengths: dict, local, verdict: "_Verdict") -> None:
        """Record that every epsilon at ``gamma`` samples the same spread-out posterior."""
        n_models = len(self.models)
        early = (f"; decided after {verdict.runs} of {n_models} probes, the others' L_n(w*) lying within the "
                 "judged ones' range" + (" or the others off a minimum at every earlier run" if verdict.presumed_off else "")
                 if verdict.runs < n_models else "")
        self.record(self.no_run_row(
            gamma, eps, "rejected: " + local.describe() + "; smaller epsilons at this gamma skipped "
            "(the posterior is set by gamma, not epsilon)" + early, lengths, healthy=True),
            f"gamma={gamma:.4g} eps={eps:.3g}")
        if self.locality_only is None or gamma > self.locality_only[0]:
            self.locality_only = (gamma, (
                f"epsilon={eps:.4g}, gamma={gamma:.6g} (delta {self.delta(gamma):.3g}), burnin={lengths['burnin']}, "
                f"draws={lengths['draws']} ({verdict.runs} of {n_models} probes run, {verdict.runs - verdict.judged} of "
                f"them off a minimum): {local.describe()}"))

    def _chosen(self, gamma: float, eps: float, lengths: dict, judged: int, local, fallback: bool) -> CalibratedSettings:
        """The settings for a passing candidate (epsilon divided by ``safety``), with the table and the
        sentence saying why."""
        base, n_models = self.base, len(self.models)
        chosen_eps = eps / self.safety
        if self.safety != 1:  # a smaller epsilon relaxes more slowly: the rule's lengths for it
            lengths = relaxation_lengths(base, chosen_eps, gamma, **self.rule)
        out = CalibratedSettings.model_validate({
            **base.model_dump(), "epsilon": chosen_eps, "gamma": gamma,
            "burnin": lengths["burnin"], "draws": lengths["draws"]})
        out._table = self.table
        out._choice = (
            f"epsilon={chosen_eps:.3g} (largest of {len(self.eps_grid)} tried whose chains passed the sampler checks and "
            + (f"drift-ratio limit at all {n_models} models" if judged == n_models else
               f"drift-ratio limit at the {judged} of {n_models} models at a minimum "
               f"({n_models - judged} not at one, left out)") +
            f"{', divided by safety ' + str(self.safety) if self.safety != 1 else ''}),"
            f" gamma={gamma:.4g} (smallest passing; delta=gamma/sqrt(nbeta)={self.delta(gamma):.3g}),"
            f" nbeta={self.nbeta:.4g}, " + _lengths_text(lengths, base, self.rule["burnin_taus"],
                                                        self.rule["draws_taus"], self.rule["max_length_factor"])
        )
        if local is not None:
            out._choice += f"; posterior local across the probes: {local.describe()}"
        if fallback:
            out._choice += (f"; no gamma with delta <= {self.max_delta:g} passed, so this stronger localization "
                            "biases the absolute LLC low: compare values across checkpoints, not with theory")
        return out


@dataclass
class _GammaScan:
    """What the full-length runs at one gamma have shown so far (for the skips of rule 3)."""

    diverged: list[float] = field(default_factory=list)  # epsilons whose full-length chains went non-finite
    ratios: list[tuple[float, float]] = field(default_factory=list)  # (epsilon, drift/noise ratio), at a minimum
    first_screen_pass: float | None = None  # the largest epsilon that passed the screen


@dataclass
class _Verdict:
    """The full-length runs of one (epsilon, gamma): passed so far (``ok``), how many probes judged it
    (at a minimum), whether a failure was a mixing one, the locality check once settled, the probes
    at a minimum ((index, LLCResult) pairs), how many runs it took and whether some probes were put
    last for being off a minimum at every earlier run."""

    ok: bool = True
    judged: int = 0
    mixing: bool = False
    local: Any = None
    at_minimum: list = field(default_factory=list)
    runs: int = 0
    presumed_off: bool = False
