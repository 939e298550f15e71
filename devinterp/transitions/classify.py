"""Stage types from the change of LLC and loss over a stage (REFERENCE.md §2.1, §5).

'A': the LLC rises significantly (the papers' type A: loss down, LLC up; the type follows the sign
of the LLC change, as in §2.1, and d_loss is reported next to it). 'B': the LLC falls
significantly. '-': |d_llc| is within ``significance`` standard errors of zero, or there is no LLC.
"""

from __future__ import annotations

import math

import numpy as np

TYPES = ("A", "B", "-")


def classify_stage(d_llc: float, d_llc_stderr: float, significance: float = 2.0) -> str:
    """Type of one stage. A zero stderr makes any nonzero change significant; NaN gives '-'."""
    if d_llc is None or not math.isfinite(d_llc):
        return "-"
    se = d_llc_stderr if d_llc_stderr is not None and math.isfinite(d_llc_stderr) else math.inf
    if se == 0:
        return "A" if d_llc > 0 else ("B" if d_llc < 0 else "-")
    z = d_llc / se
    return "A" if z > significance else ("B" if z < -significance else "-")


def change_with_stderr(M: np.ndarray, cov: np.ndarray, y: np.ndarray, chains: np.ndarray | None,
                       i: int, j: int) -> tuple[float, float]:
    """Change of the smoothed level from checkpoint i to j and its standard error.

    ``M``: smoother operator at the checkpoints (level = M @ y); ``cov``: posterior covariance of
    the level there (noise estimated from the data). With per-chain values (chains x checkpoints),
    each chain's series is smoothed and differenced on its own, so the chains' offsets, shared by
    every checkpoint (common random numbers), cancel; the stderr is then the larger of the chains'
    spread / √C and the smoother's posterior sd.
    """
    d = float(M[j] @ y - M[i] @ y)
    se_gp = float(np.sqrt(max(cov[i, i] + cov[j, j] - 2 * cov[i, j], 0.0)))
    if chains is None or len(chains) < 2:
        return d, se_gp
    per_chain = chains @ (M[j] - M[i])
    se_chain = float(np.std(per_chain, ddof=1) / np.sqrt(len(per_chain)))
    return d, max(se_gp, se_chain)
