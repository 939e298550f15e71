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
