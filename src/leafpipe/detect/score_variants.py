"""How teacher and student token scores become one confounder score d per token (lower: more
confounding). The paper's is the default; the others are named options (`detection.score`),
compared side by side on the world by the report (leafpipe.detect.quality).

- "paper": min-max each model's gradient norms over the scope, d = minmax(t̂ − ŝ).
- "grad_x_input": the same combination of |∂L/∂e_i · e_i| instead of ‖∂L/∂e_i‖.
- "rank": each model's gradient norms as ranks scaled to [0, 1], d = minmax(rank_t − rank_s).
- "ratio": d = minmax(log((t̂ + ε) / (ŝ + ε))) of the min-max normalised gradient norms.

Every variant keeps the paper's reading: d is in [0, 1], low where the student is sensitive to a
token and the teacher is not, so detection thresholds it the same way whatever the variant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

# "ratio": added to both normalised scores before dividing (see `ratio`).
RATIO_EPSILON = 0.1


class Normalised(NamedTuple):
    """A scope's normalised teacher and student scores and their combination d, each [n] (None
    where undefined: every value equal, so no token stands out)."""

    teacher: np.ndarray | None
    student: np.ndarray | None
    diff: np.ndarray | None


def minmax(x: np.ndarray) -> np.ndarray | None:
    """Scale to [0, 1]; None when all values are equal (no token stands out, nothing to rank)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 0.0:
        return None
    return (x - lo) / (hi - lo)


def rank_scale(x: np.ndarray) -> np.ndarray | None:
    """Ranks scaled to [0, 1] (lowest 0, highest 1, tied values share their mean rank); None when
    all values are equal, as for `minmax`.

    Unlike min-max, one token with a huge gradient (a number the answer copies, say) cannot
    squash every other token towards 0: each token moves by one rank step whatever its size.
    """
    if minmax(x) is None:
        return None
    ranks = pd.Series(x).rank(method="average").to_numpy(dtype=float)  # 1 .. n
    return (ranks - 1.0) / (len(x) - 1.0)


def _difference(t: np.ndarray, s: np.ndarray) -> np.ndarray | None:
    """The paper's combination: how much more the teacher relies on a token than the student."""
    return minmax(t - s)


def ratio(t: np.ndarray, s: np.ndarray) -> np.ndarray | None:
    """d = minmax(log((t̂ + ε) / (ŝ + ε))), ε = RATIO_EPSILON, on min-max normalised scores.

    Why a ratio: the difference treats t̂ = 0.02, ŝ = 0.20 (the teacher ignores the token, the
    student leans on it tenfold) like t̂ = 0.80, ŝ = 0.98 (both rely on it heavily, as on a
    number the problem needs). On the world the problem's own numbers and the planted ones have
    about the same difference but different ratios, since both models are sensitive to needed
    numbers. A ratio measures the student's reliance relative to the teacher's.
    Why the log: it makes a factor of k towards the student and towards the teacher equally far
    from "the same" (log 1 = 0). With symmetric extremes, equal reliance lands near d = 0.5,
    so the percentile cap (0.5) and an absolute threshold keep their meaning. A plain ratio
    would put equal reliance near 0.1 of its range, and the cap would never bind.
    Why ε = 0.1: min-max sets each model's least sensitive token to exactly 0, an artefact of
    the scaling rather than a token the model ignores. Without ε its ratio is 0 or infinite and,
    after the final min-max, one such token would squeeze every other d into a narrow band.
    ε = 0.1 bounds the ratio to [1/11, 11], so a score below about 0.1 counts as "hardly used"
    and no single token dominates.
    """
    return minmax(np.log((t + RATIO_EPSILON) / (s + RATIO_EPSILON)))


class Variant(NamedTuple):
    """One score variant: the scorer column (leafpipe.detect.scoring) it reads the raw per-token
    scores from, how each model's scores are normalised, and how the two normalised scores
    combine."""

    raw_input: str
    normalise: Callable[[np.ndarray], np.ndarray | None]
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray | None]


VARIANTS = {
    "paper": Variant("grad_norm", minmax, _difference),
    "grad_x_input": Variant("grad_x_input", minmax, _difference),
    "rank": Variant("grad_norm", rank_scale, _difference),
    "ratio": Variant("grad_norm", minmax, ratio),
}
SCORES = tuple(VARIANTS)
# score -> its scorer column: detection reads the raw scores from it before normalised_difference.
RAW_INPUT = {score: variant.raw_input for score, variant in VARIANTS.items()}


def normalised_difference(
    teacher: np.ndarray, student: np.ndarray, score: str = "paper"
) -> Normalised:
    """d for one scope's raw per-token scores.

    Args:
        teacher: [n] finite raw scores of the teacher (column `RAW_INPUT[score]`), aligned onto
            the student's tokens.
        student: [n] finite raw scores of the student, same column.
        score: one of `SCORES`.

    Returns:
        The normalised teacher and student scores and d, each [n] in [0, 1]; a model's
        normalised scores are None if all its raw scores are equal, d is None if either is or
        if the combination is constant.

    "grad_x_input" combines like "paper": it differs in its input (the scorer's gradient × input
    column). The embedding gradient's norm says how strongly the loss reacts to *any* change of
    the token's embedding; gradient × input is the first-order change of the loss when the token
    is removed (its embedding set to 0), which is exactly what a counterfactual does.
    """
    if score not in VARIANTS:
        raise ValueError(f"unknown detection score {score!r}; choose one of {SCORES}")
    variant = VARIANTS[score]
    t, s = variant.normalise(teacher), variant.normalise(student)
    if t is None or s is None:
        return Normalised(t, s, None)
    return Normalised(t, s, variant.combine(t, s))
