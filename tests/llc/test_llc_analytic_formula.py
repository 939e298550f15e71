"""Aoyagi's reduced-rank-regression formula against the worked table of REFERENCE.md §1.6(c)
(an independent source: each row's regime and arithmetic were done by hand there)."""

from fractions import Fraction

import pytest

from devinterp.llc.analytic import normal_crossing_learning_coefficient, rrr_case, rrr_learning_coefficient

# (M, H, N, r), regime, lambda — copied from the table, not from our output
TABLE = [
    ((5, 3, 5, 0), "1b", Fraction(13, 2)),
    ((5, 4, 5, 0), "1a", Fraction(8)),
    ((4, 3, 8, 0), "2", Fraction(6)),
    ((8, 3, 4, 0), "3", Fraction(6)),
    ((3, 8, 4, 0), "4", Fraction(6)),
    ((10, 5, 10, 2), "1b", Fraction(29)),
    ((6, 4, 9, 1), "1a", Fraction(29, 2)),
    ((3, 2, 10, 1), "2", Fraction(7)),
    ((2, 9, 3, 1), "4", Fraction(3)),
    ((7, 7, 7, 7), "1a", Fraction(49, 2)),
]


@pytest.mark.parametrize("shape, case, lam", TABLE)
def test_rrr_table(shape, case, lam):
    assert rrr_case(*shape) == case
    assert rrr_learning_coefficient(*shape) == lam


def test_rrr_bounded_by_half_dimension_and_regular_at_full_rank():
    for M in range(1, 7):
        for H in range(1, 7):
            for N in range(1, 7):
                for r in range(0, min(M, H, N) + 1):
                    lam = rrr_learning_coefficient(M, H, N, r)
                    assert 0 < lam <= Fraction(H * (M + N), 2)



    assert rrr_learning_coefficient(2, 9, 3, 1) == Fraction(2 * 3, 2)


def test_rrr_rejects_bad_rank():
    with pytest.raises(ValueError, match="true rank"):
        rrr_learning_coefficient(3, 2, 3, 3)


@pytest.mark.parametrize("powers, lam", [((0, 1), Fraction(1, 2)), ((1, 2), Fraction(1, 4)), ((3, 3), Fraction(1, 6))])
def test_normal_crossing(powers, lam):
    assert normal_crossing_learning_coefficient(powers) == lam


def test_localized_monomial_target_against_closed_forms():
    """The quadrature of nbeta*E[K] under exp(-nbeta K - gamma/2 |w|^2) against two closed forms:
    K = c w2^2 (Gaussian: nbeta c / (2 nbeta c + gamma)), and K = c w1^2 w2^4 with the w1 integral done
    by hand (w1 | w2 is Gaussian), leaving a 1-D integral."""
    import numpy as np
    from scipy.integrate import quad

    from devinterp.llc.analytic import localized_monomial_llc

    nbeta, gamma, c = 144.8, 0.361, 2.1
    assert localized_monomial_llc((0, 1), nbeta, gamma, c) == pytest.approx(nbeta * c / (2 * nbeta * c + gamma), rel=1e-6)

    a = lambda w2: nbeta * c * w2 ** 4 + gamma / 2  # noqa: E731
    weight = lambda w2: np.exp(-gamma / 2 * w2 ** 2) / np.sqrt(a(w2))  # noqa: E731
    num = quad(lambda w2: weight(w2) * nbeta * c * w2 ** 4 / (2 * a(w2)), -np.inf, np.inf, limit=500)[0]
    by_hand = num / quad(weight, -np.inf, np.inf, limit=500)[0]
    assert localized_monomial_llc((1, 2), nbeta, gamma, c) == pytest.approx(by_hand, rel=1e-2)
    # it sits below lambda = 1/4 at this nbeta and climbs towards it as nbeta grows
    values = [localized_monomial_llc((1, 2), nb, 1.0, 1.0) for nb in (1e2, 1e3, 1e4)]
    assert values[0] < values[1] < values[2] < 0.25
