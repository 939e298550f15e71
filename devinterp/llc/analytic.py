"""Closed-form learning coefficients for tests and sanity checks (REFERENCE.md §1.6).

* :func:`rrr_learning_coefficient` — reduced-rank regression y = B A x (Aoyagi & Watanabe 2005).
* :func:`normal_crossing_learning_coefficient` — K(w) = prod_i w_i^(2 k_i).
* :func:`localized_monomial_llc` — the finite-nbeta, localized target of SGLD for such a K (quadrature; a float).
The learning coefficients are exact :class:`fractions.Fraction` s.
"""

from __future__ import annotations

from fractions import Fraction


def rrr_case(M: int, H: int, N: int, r: int) -> str:
    """Which regime of Aoyagi's formula applies: '1a' (case 1, M+H+N+r even), '1b' (odd), '2', '3', '4'."""
    _check_rrr(M, H, N, r)
    if M + H < N + r:
        return "2"
    if N + H < M + r:
        return "3"
    if M + N < H + r:
        return "4"
    return "1a" if (M + H + N + r) % 2 == 0 else "1b"


def _check_rrr(M: int, H: int, N: int, r: int) -> None:
    if min(M, H, N) < 1:
        raise ValueError(f"M, H, N must be >= 1, got M={M}, H={H}, N={N}")
    if not 0 <= r <= min(M, H, N):
        raise ValueError(f"the true rank r must lie in 0..min(M, H, N) = 0..{min(M, H, N)}, got r={r}")


def rrr_learning_coefficient(M: int, H: int, N: int, r: int = 0) -> Fraction:
    """lambda of reduced-rank regression: input dim M, hidden/rank H, output dim N, true rank r.

    Model y = B A x, A in R^{H x M}, B in R^{N x H} (d = H(M+N) parameters); the true map has rank
    r <= min(M, H, N). Aoyagi & Watanabe (2005), as in REFERENCE.md §1.6(c):
    case 1 (N+r <= M+H, M+r <= N+H, H+r <= M+N): S = 2(H+r)(M+N) - (M-N)^2 - (H+r)^2,
    lambda = S/8 if M+H+N+r is even, (S+1)/8 if odd; case 2 (M+H < N+r): (HM - Hr + Nr)/2;
    case 3 (N+H < M+r): (HN - Hr + Mr)/2; case 4 (M+N < H+r): MN/2.
    """
    case = rrr_case(M, H, N, r)
    if case == "2":
        return Fraction(H * M - H * r + N * r, 2)
    if case == "3":
        return Fraction(H * N - H * r + M * r, 2)
    if case == "4":
        return Fraction(M * N, 2)
    s = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
    return Fraction(s, 8) if case == "1a" else Fraction(s + 1, 8)


def normal_crossing_learning_coefficient(k: tuple[int, ...] | list[int]) -> Fraction:
    """lambda of K(w) = prod_i w_i^(2 k_i): min over k_i > 0 of 1/(2 k_i) (REFERENCE.md §1.6(a))."""
    positive = [int(x) for x in k if x > 0]
    if not positive or any(x < 0 for x in k):
        raise ValueError(f"powers must be >= 0 with at least one > 0, got {tuple(k)}")
    return Fraction(1, 2 * max(positive))


def localized_monomial_llc(powers: tuple[int, int], nbeta: float, gamma: float, scale: float = 1.0) -> float:
    """The exact finite-temperature target of the SGLD estimator for K(w) = scale * w1^(2 p1) * w2^(2 p2).

    SGLD with localization ``gamma`` samples p(w) ∝ exp(-nbeta K(w) - gamma/2 |w|^2) (w* = 0), and the
    estimator's expectation is nbeta * E_p[K] — which tends to the learning coefficient
    min(1/(2 p_i)) only as nbeta -> infinity, slowly when the powers differ (e.g. (1, 2): 0.234 at
    nbeta 145, gamma 0.36, against lambda = 1/4). Computed by nested adaptive quadrature (scipy)
    over |w_i| <= 12 / sqrt(gamma), outside which the localizing Gaussian leaves no mass. For
    checking a sampler against what it should find at its own settings.
    """
    import numpy as np
    from scipy.integrate import quad

    p1, p2 = powers
    if min(p1, p2) < 0 or nbeta <= 0 or gamma <= 0 or scale <= 0:
        raise ValueError("need non-negative powers and positive nbeta, gamma, scale")
    edge = 12.0 / np.sqrt(gamma)

    def inner(w2: float, weighted: bool) -> float:
        s = nbeta * scale * w2 ** (2 * p2)

        def f(w1: float) -> float:
            k = s * w1 ** (2 * p1)
            return (k if weighted else 1.0) * np.exp(-k - 0.5 * gamma * (w1 * w1 + w2 * w2))

        return quad(f, -edge, edge, points=[0.0], limit=400)[0]

    num = quad(lambda w2: inner(w2, True), -edge, edge, points=[0.0], limit=400)[0]
    den = quad(lambda w2: inner(w2, False), -edge, edge, points=[0.0], limit=400)[0]
    return num / den
