"""What detection found: precision and recall against planted distractors, and the scopes it
left undetected.

A scope is left undetected when min-max is undefined there (leafpipe.detect.confounders); each
such scope is recorded by name (`SCOPES`) with its reason (`UNDETECTABLE_REASONS`) in
tokens.parquet's `unscored` column, and counted here.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from leafpipe.text.templates import INSTRUCTION

if TYPE_CHECKING:
    from leafpipe.detect.confounders import DetectSpec

# The scopes of a sample, by name, and why one can be left undetected.
SCOPES = ("instruction", "steps")  # the instruction; the earlier reasoning steps
NON_FINITE, ALL_EQUAL, EQUAL_DIFFERENCE = "non_finite", "all_equal", "equal_difference"
UNDETECTABLE_REASONS = (NON_FINITE, ALL_EQUAL, EQUAL_DIFFERENCE)


def unscored_counts(tokens: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{scope: {reason: samples}} of the scopes detection left undetected, from tokens.parquet's
    `unscored` column (zeros for a frame without it, e.g. one written before it existed)."""
    counts = {scope: dict.fromkeys(UNDETECTABLE_REASONS, 0) for scope in SCOPES}
    column = tokens["unscored"] if "unscored" in tokens.columns else []
    for cell in column:
        for scope, reason in json.loads(cell).items():
            counts[scope][reason] += 1
    return counts


def detection_metrics(tokens: pd.DataFrame, spec: DetectSpec) -> dict[str, Any]:
    """Token-level precision/recall of instruction confounders against planted distractors.

    Whitespace-only tokens are left out: they are never confounders by rule, so counting them
    as planted would charge recall for tokens no setting could find. `base_rate` is the
    precision a random choice of tokens would get. `mean_scores` (normalised teacher, student
    and difference scores, averaged over planted and over other tokens) says why detection
    works or fails: it needs planted tokens to have a clearly lower difference. `unscored`
    counts the samples whose instruction or earlier reasoning steps got no detection, by reason
    (`unscored_counts`).
    """
    conf = planted = hit = total = 0
    sums = {
        group: {"teacher": 0.0, "student": 0.0, "diff": 0.0, "n": 0}
        for group in ("planted", "other")
    }
    for r in tokens.itertuples(index=False):
        rows = zip(
            r.field, r.text, r.is_confounder, r.is_planted, r.teacher_norm, r.student_norm, r.diff
        )
        for f, text, c, p, t_norm, s_norm, diff in rows:
            if f != INSTRUCTION or not text.strip():
                continue
            total += 1
            conf += bool(c)
            planted += bool(p)
            hit += bool(c and p)
            if np.isfinite(diff):
                group = sums["planted" if p else "other"]
                group["teacher"] += t_norm
                group["student"] += s_norm
                group["diff"] += diff
                group["n"] += 1
    precision = hit / conf if conf else 0.0
    recall = hit / planted if planted else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    mean_scores = {
        group: {k: v / g["n"] for k, v in g.items() if k != "n"} if g["n"] else None
        for group, g in sums.items()
    }
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "base_rate": planted / total if total else 0.0,
        "n_samples": len(tokens),
        "n_tokens": total,
        "n_confounders": conf,
        "n_planted": planted,
        "mean_scores": mean_scores,
        "unscored": unscored_counts(tokens),
        "settings": asdict(spec),
    }
