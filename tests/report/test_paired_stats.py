import math

import numpy as np
import pytest

from leafpipe.report.paired_stats import (
    align,
    mcnemar_exact,
    minimum_detectable_difference,
    paired_bootstrap_ci,
    paired_comparison,
)


def _pairs(both: int, b: int, c: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired outcomes with the given cells: both right, only the candidate (b), only the baseline
    (c), neither."""
    candidate = [True] * both + [True] * b + [False] * c + [False] * neither
    baseline = [True] * both + [False] * b + [True] * c + [False] * neither
    return np.array(candidate), np.array(baseline)


def test_mcnemar_matches_a_hand_computed_binomial_tail():
    # b=1, c=8: 2 · P(X ≤ 1), X ~ Bin(9, 1/2) = 2 · (1 + 9) / 512
    assert mcnemar_exact(1, 8) == pytest.approx(0.0390625, abs=1e-15)
    assert mcnemar_exact(8, 1) == mcnemar_exact(1, 8), "two-sided: the direction does not matter"
    # b=0, c=5: 2 / 32
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625, abs=1e-15)


def test_mcnemar_is_one_without_evidence_either_way():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(7, 7) == 1.0, "b = c: the tail holds more than half, capped at 1"


def test_mcnemar_keeps_tiny_tails_of_large_counts():
    assert 0 <= mcnemar_exact(0, 2000) < 1e-300  # 2 / 2**2000: below a float's range, not NaN
    assert mcnemar_exact(400, 600) < 1e-9 and not math.isnan(mcnemar_exact(400, 600))


def test_bootstrap_interval_holds_the_constructed_difference_and_excludes_zero():
    # Two seeds, 400 problems each, the candidate 10 points ahead in both (60-20 and 50-10
    # discordant).
    replicates = [_pairs(200, 60, 20, 120), _pairs(210, 50, 10, 130)]
    low, high = paired_bootstrap_ci(replicates, seed=1)
    assert low < 0.10 < high and low > 0
    assert high - low < 0.06, (
        "pairing: far narrower than the two Wilson intervals' ±4.9 points each"
    )
    assert paired_bootstrap_ci(replicates, seed=1) == (low, high), "seeded: reproducible"


def test_bootstrap_interval_of_a_tie_contains_zero():
    low, high = paired_bootstrap_ci([_pairs(100, 30, 30, 40)])
    assert low < 0 < high and low == pytest.approx(-high, abs=0.02)


def test_minimum_detectable_difference_inverts_connors_sample_size():
    # Connor (1987): δ = 0.1, ψ = 0.3, α = 0.05, power 0.8 needs
    # n = (1.95996·√0.3 + 0.84162·√0.29)² / 0.01 = 233.1 pairs.
    n = (1.959964 * math.sqrt(0.3) + 0.841621 * math.sqrt(0.29)) ** 2 / 0.01
    assert n == pytest.approx(233.1, abs=0.05)
    assert minimum_detectable_difference(round(n), 0.3) == pytest.approx(0.1, abs=5e-4)
    assert (
        minimum_detectable_difference(4 * 233, 0.3) < minimum_detectable_difference(233, 0.3) / 1.9
    )
    assert math.isnan(minimum_detectable_difference(1000, 0.0))


def test_paired_comparison_pools_discordant_pairs_over_seeds():
    result = paired_comparison({0: _pairs(10, 1, 3, 6), 1: _pairs(12, 0, 5, 3)})
    assert (result.n, result.b, result.c) == (40, 1, 8)
    assert result.p_value == pytest.approx(0.0390625), "McNemar on the summed b=1, c=8"
    assert result.diff == pytest.approx(-7 / 40)
    assert result.per_seed == {0: pytest.approx(-0.1), 1: pytest.approx(-0.25)}
    assert result.ci_high < 0 and result.separated


def test_align_pairs_by_problem_id_and_refuses_different_problems():
    candidate, baseline = align({"b": True, "a": False}, {"a": True, "b": True})
    assert candidate.tolist() == [False, True] and baseline.tolist() == [True, True]
    with pytest.raises(ValueError, match="different problems"):
        align({"a": True}, {"b": True})
