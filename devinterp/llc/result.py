"""The outcome of one LLC estimate."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from devinterp.config import LLCSettings


@dataclass
class LLCResult:
    """An LLC estimate with its uncertainty, traces and health (REFERENCE.md §1.2–1.4).

    llc:           mean over chains of the per-chain estimates, nbeta * (mean draw loss - init_loss).
    stderr:        std across chains (ddof=1) / sqrt(chains); nan for one chain. It leaves out the
                   error of ``init_loss`` (shared by the chains): ``total_stderr`` includes it.
    chain_llcs:    Float[chains].
    loss_trace:    Float[chains, draws], minibatch loss (nats) of each recorded draw after burn-in.
    burnin_trace:  Float[chains, burnin], the discarded steps' losses (diagnostics only).
    init_loss:     L_n(w*) in nats, averaged over ``settings.init_loss_batches`` batches (default:
                   all the data; ``init_loss_stderr`` its standard error, 0 when they cover all data).
    nbeta:         n*beta used; ``nbeta_source`` says how it was obtained; ``n`` the sample count.
    healthy/reasons: False and one string per failed check (devinterp.llc.diagnostics).
    diagnostics:   the numbers behind the checks (rhat, ess_min, trend_z, ...) and
                   ``drift_noise_ratio`` = mean |drift step| / |noise step| after burn-in.
    wbic:          local WBIC = n * mean draw loss (mean over chains) when settings.wbic, else None.
    backend:       which backend ran the chains (and why, if it fell back).
    seconds, chain_steps_per_s: wall time of the sampling loop and its throughput.
    """

    llc: float
    stderr: float
    chain_llcs: np.ndarray
    loss_trace: np.ndarray
    burnin_trace: np.ndarray
    init_loss: float
    init_loss_stderr: float
    nbeta: float
    nbeta_source: str
    n: int | None
    healthy: bool
    reasons: list[str]
    settings: LLCSettings
    d_sampled: int
    backend: str
    seconds: float
    chain_steps_per_s: float
    diagnostics: dict[str, float] = field(default_factory=dict)
    wbic: float | None = None

    @property
    def total_stderr(self) -> float:
        """The estimate's standard error with the init loss's: sqrt(stderr² + (nbeta·init_loss_stderr)²)."""
        return float(np.hypot(self.stderr, self.nbeta * self.init_loss_stderr))

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else "UNHEALTHY: " + "; ".join(r.split(":")[0] for r in self.reasons)
        return (
            f"LLCResult(llc={self.llc:.4g} ± {self.total_stderr:.2g}, chains={len(self.chain_llcs)}, "
            f"nbeta={self.nbeta:.4g}, init_loss={self.init_loss:.4g}, {state})"
        )
