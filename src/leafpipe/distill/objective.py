"""The arithmetic of an optimiser step's loss: how its original and counterfactual terms are
weighted (`term_weights`) and combined (`combined_loss`), and the learning rate of each step
(`lr_at`).

Pure functions of token counts, loss sums and the spec, shared by the step runner, the
validation loss, the step log and the tests that check the scheme against the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from leafpipe.distill.data import ORIGINAL_REF
from leafpipe.distill.spec import ALL, DistillSpec


def term_of(ref: tuple[int, int]) -> str:
    """The loss term a sample belongs to: "orig" for an original, "cf" for a counterfactual."""
    return "orig" if ref[1] == ORIGINAL_REF else "cf"


def terms(sums: Mapping[str, float]) -> tuple[float, float]:
    """Per-token means of the original and counterfactual terms (NaN for a term with no
    tokens)."""
    orig = sums["orig"] / sums["orig_tokens"] if sums["orig_tokens"] else math.nan
    cf = sums["cf"] / sums["cf_tokens"] if sums["cf_tokens"] else math.nan
    return orig, cf


def term_weights(n_orig: int, n_cf: int, lam: float, mode: str) -> tuple[float, float]:
    """What a step's original and counterfactual loss sums are multiplied by before backward.

    `n_orig`, `n_cf`: the step's trained tokens of each kind. `all`: 1 and λ over
    N_orig + λ N_cf (one weighted token mean); `draw_one`: 1 / N_orig and λ / N_cf (a mean per
    term). Counting the whole step, not a micro-batch, is what makes accumulation exact.
    """
    if mode == ALL:
        total = (n_orig + lam * n_cf) or 1.0
        return 1.0 / total, lam / total
    return 1.0 / max(n_orig, 1), lam / max(n_cf, 1)


def combined_loss(sums: Mapping[str, float], lam: float, mode: str) -> float:
    """The loss L of loss sums and token counts (`LOSS_SUMS`): what `term_weights` trains.

    NaN when there are no trained tokens; a set without counterfactuals has no cf term.
    """
    if mode == ALL:
        total = sums["orig_tokens"] + lam * sums["cf_tokens"]
        return (sums["orig"] + lam * sums["cf"]) / total if total else math.nan
    orig, cf = terms(sums)
    return orig if math.isnan(cf) else orig + lam * cf


def lr_at(step: int, total_steps: int, spec: DistillSpec) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warm-up, then `spec.schedule`."""
    warmup = round(spec.warmup_ratio * total_steps)
    if step < warmup:
        return spec.lr * (step + 1) / (warmup + 1)
    if spec.schedule == "constant":
        return spec.lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    if spec.schedule == "linear":
        return spec.lr * (1.0 - progress)
    return spec.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
