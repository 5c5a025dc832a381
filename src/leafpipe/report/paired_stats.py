"""Paired statistics: can this run tell two models apart?

Two models graded on the same problems are paired. Most problems are solved by both or by
neither, and only the discordant ones (solved by exactly one) carry information about which is
better, so intervals computed for each model on its own (the Wilson ones) are far wider than the
uncertainty of the difference itself. Here: McNemar's exact test on the discordant pairs, a paired
bootstrap interval of the accuracy difference, and the smallest difference the run could have
detected. Replicates (seeds) are pooled: their discordant pairs are summed, and the bootstrap
resamples problems within each seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist

import numpy as np

Outcomes = tuple[
    np.ndarray, np.ndarray
]  # a seed's (candidate, baseline) correctness, [N] bool each


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    Args:
        b: pairs the candidate got right and the baseline wrong.
        c: pairs the baseline got right and the candidate wrong.

    Returns:
        p = min(1, 2·P(X ≤ min(b, c))) with X ~ Bin(b + c, 1/2): under "no difference" each
        discordant pair goes either way with probability 1/2. With no discordant pair, p = 1.
        Computed in exact fractions, so large counts lose no tail mass to rounding.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    tail = Fraction(sum(math.comb(n, k) for k in range(min(b, c) + 1)), 2**n)
    return float(min(Fraction(1), 2 * tail))


def _differences(outcomes: Outcomes) -> np.ndarray:
    """Each problem's candidate − baseline correctness, in {-1, 0, 1}: [N]."""
    candidate, baseline = (np.asarray(o, dtype=bool) for o in outcomes)
    if candidate.shape != baseline.shape or candidate.ndim != 1:
        raise ValueError(
            "paired outcomes need one flag per problem each, "
            f"got {candidate.shape} and {baseline.shape}"
        )
    return candidate.astype(np.int64) - baseline.astype(np.int64)


def paired_bootstrap_ci(
    replicates: Sequence[Outcomes], *, resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the pooled accuracy difference (candidate − baseline, a
    share).

    Each resample draws every seed's problems with replacement, within that seed (a seed's
    problems are its own test split and its own models), and pools the differences over all
    problems. A problem's difference takes one of three values, so drawing N problems with
    replacement is drawing the counts of -1, 0 and +1 from a multinomial: each resample costs
    three numbers per seed instead of N.

    Args:
        replicates: per seed, the (candidate, baseline) correctness of its problems.
        resamples: bootstrap resamples; `seed`: the generator's seed (the interval is reproducible).
        level: the interval's coverage.
    """
    rng = np.random.default_rng(seed)
    pooled = np.zeros(resamples)
    n = 0
    for outcomes in replicates:
        d = _differences(outcomes)
        if not len(d):
            continue
        shares = np.array([(d == v).mean() for v in (-1, 0, 1)])
        draws = rng.multinomial(len(d), shares, size=resamples)  # [resamples, 3]
        pooled += draws[:, 2] - draws[:, 0]
        n += len(d)
    if not n:
        raise ValueError("a bootstrap interval needs at least one paired problem")
    low, high = np.quantile(pooled / n, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def minimum_detectable_difference(
    n: int, discordance: float, *, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest true accuracy difference (a share) that McNemar's test at level `alpha`
    would detect with probability `power` on `n` pairs with this discordance rate.

    Connor's (1987) sample size for McNemar's test, solved for the difference δ:
    n·δ² = (z_{1−α/2}·√ψ + z_{power}·√(ψ − δ²))², with ψ the share of discordant pairs (taken
    as observed). The left side grows and the right shrinks with δ, so bisection finds the one
    root in (0, √ψ). NaN without discordant pairs (ψ = 0: no difference has been seen to size
    against) or with too few pairs for any δ ≤ √ψ.
    """
    if n <= 0 or discordance <= 0:
        return math.nan
    z_alpha, z_power = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)

    def excess(delta: float) -> float:
        spare = max(0.0, discordance - delta**2)  # √ψ squared may round past ψ
        return n * delta**2 - (z_alpha * math.sqrt(discordance) + z_power * math.sqrt(spare)) ** 2

    low, high = 0.0, math.sqrt(discordance)
    if excess(high) < 0:
        return math.nan
    for _ in range(60):  # halves the bracket to far below a rounding error of a share
        mid = (low + high) / 2
        low, high = (mid, high) if excess(mid) < 0 else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class PairedComparison:
    """A candidate against a baseline on shared problems, pooled over seeds. Differences are
    shares (candidate − baseline); `per_seed` holds each seed's own difference."""

    n: int
    b: int
    c: int
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    mdd: float
    per_seed: dict[int, float]

    @property
    def separated(self) -> bool:
        """Whether the interval excludes 0: only then does the report call it a difference."""
        return self.ci_low > 0 or self.ci_high < 0


def paired_comparison(
    replicates: Mapping[int, Outcomes], *, resamples: int = 10_000, seed: int = 0
) -> PairedComparison:
    """Every statistic of a pairing, pooled over `replicates` (seed -> its paired outcomes)."""
    diffs = {s: _differences(o) for s, o in replicates.items()}
    n = sum(len(d) for d in diffs.values())
    if not n:
        raise ValueError("a paired comparison needs at least one shared problem")
    b = sum(int((d == 1).sum()) for d in diffs.values())
    c = sum(int((d == -1).sum()) for d in diffs.values())
    low, high = paired_bootstrap_ci(list(replicates.values()), resamples=resamples, seed=seed)
    return PairedComparison(
        n=n,
        b=b,
        c=c,
        diff=(b - c) / n,
        ci_low=low,
        ci_high=high,
        p_value=mcnemar_exact(b, c),
        mdd=minimum_detectable_difference(n, (b + c) / n),
        per_seed={s: float(d.mean()) for s, d in diffs.items() if len(d)},
    )


def align(candidate: Mapping[str, bool], baseline: Mapping[str, bool]) -> Outcomes:
    """Two models' per-problem correctness (problem id -> solved) as paired arrays in one order;
    both must cover the same problems, or the pairing would be a comparison of different tests."""
    if candidate.keys() != baseline.keys():
        only = sorted(set(candidate) ^ set(baseline))
        raise ValueError(
            f"paired results cover different problems ({len(only)} not shared, e.g. {only[:3]})"
        )
    ids = sorted(candidate)
    return np.array([candidate[i] for i in ids], dtype=bool), np.array(
        [baseline[i] for i in ids], dtype=bool
    )
