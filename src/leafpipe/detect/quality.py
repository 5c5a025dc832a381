"""How good is confounder detection, by kind of token and by score variant.

A precision averaged over all instruction tokens hides the failure that matters: a detector that
flags every number looks fine on average and deletes the numbers the problem needs as often as
the planted ones. So every statistic here is broken down by kind (leafpipe.detect.token_kinds), and
every score variant (leafpipe.detect.score_variants) is re-run on the stored raw scores with
detection's own code (per-scope normalisation, thresholding, span merging and length limits),
so the variants are compared on the same tokens under the same settings. The percentile sweep
re-thresholds each variant's d, so a poor result can be told apart from a poorly chosen
percentile. Pure pandas/numpy: the report and the inspect stage import it without torch.

Domain overrides (`detection.domains`) are not applied when re-running: the tokens do not record
a sample's domain. The configured variant's stored flags are used as they are.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from leafpipe.detect.confounders import (
    RAW_COLUMNS,
    DetectSpec,
    confounder_spans,
    detect_sample,
    detection_metrics,
    spans_json,
    threshold_flags,
)
from leafpipe.detect.score_variants import RAW_INPUT, SCORES
from leafpipe.detect.token_kinds import CORPUS_KINDS, PLANTED_KINDS, WHITESPACE
from leafpipe.files.atomic import atomic_path
from leafpipe.text.templates import INSTRUCTION

SWEEP_COLUMNS = ["percentile", "precision", "recall", "f1", "n_flagged"]
KIND_COLUMNS = [
    "kind",
    "n_tokens",
    "n_flagged",
    "share_flagged",
    "n_scored",
    "mean_teacher",
    "mean_student",
    "mean_diff",
]
METRICS = ("precision", "recall", "f1")


class Comparison(NamedTuple):
    """The score variants side by side (rows of `variants`: one per score; `by_kind`: one per
    score and kind; `sweep`: one per score and percentile)."""

    variants: pd.DataFrame
    by_kind: pd.DataFrame
    sweep: pd.DataFrame


def rethreshold(tokens: pd.DataFrame, spec: DetectSpec) -> pd.DataFrame:
    """`tokens` with instruction flags recomputed from the stored `diff` under `spec`.

    Detection's instruction scope is exactly the instruction tokens with a finite `diff`, so
    applying `threshold_flags` there, then dropping the spans outside the length limits
    (`confounder_spans`) as `detect` does, reproduces detection's instruction flags for the same
    spec.
    Response flags are cleared: they are normalised per step scope, which the sweep does not
    rebuild, and no instruction-level metric reads them.
    """
    flags_out = []
    for r in tokens.itertuples(index=False):
        fields, texts = list(r.field), list(r.text)
        diff = np.asarray(r.diff, dtype=float)
        flags = np.zeros(len(texts), dtype=bool)
        idx = np.flatnonzero((np.asarray(fields) == INSTRUCTION) & np.isfinite(diff))
        if idx.size:
            content = np.array([bool(texts[i].strip()) for i in idx])
            flags[idx] = threshold_flags(diff[idx], content, spec)
            confounder_spans(
                flags, fields, list(r.step), list(r.char_start), list(r.char_end), texts, spec
            )
        flags_out.append(flags.tolist())
    out = tokens.copy()
    out["is_confounder"] = flags_out
    if "is_planted" not in out.columns:
        out["is_planted"] = [[False] * len(t) for t in out["text"]]
    return out


def _scores(m: dict[str, Any]) -> dict[str, float]:
    """Precision, recall and F1 of `detection_metrics`; NaN without planted labels (nothing to
    measure against, and 0 would read as a failure)."""
    return {k: m[k] if m["n_planted"] else math.nan for k in METRICS}


def percentile_sweep(
    tokens: pd.DataFrame, spec: DetectSpec, percentiles: Sequence[float]
) -> pd.DataFrame:
    """Precision, recall, F1 and flagged-token count of instruction tokens at each percentile.

    `tokens` is detection/tokens.parquet; every other setting of `spec` (cap, span limits) is
    kept, and the strategy is forced to `percentile`. Scored as `detection_metrics` scores
    (instruction tokens, whitespace left out), so the row at the configured percentile equals
    metrics.json. Recall can only grow with the percentile unless `max_span_tokens` drops spans
    that grew too long.
    """
    rows = []
    for p in percentiles:
        p_spec = replace(spec, strategy="percentile", percentile=float(p))
        m = detection_metrics(rethreshold(tokens, p_spec), p_spec)
        rows.append({"percentile": float(p), **_scores(m), "n_flagged": m["n_confounders"]})
    return pd.DataFrame.from_records(rows, columns=SWEEP_COLUMNS)


def _raw_columns(score: str) -> tuple[str, str]:
    """The tokens.parquet columns of the teacher's (aligned onto the student's tokens) and the
    student's raw scores that `score` combines."""
    suffix = RAW_COLUMNS[RAW_INPUT[score]]
    return f"teacher_{suffix}", f"student_{suffix}"


def rescore(tokens: pd.DataFrame, spec: DetectSpec, score: str) -> pd.DataFrame:
    """`tokens` with normalised scores, d and flags recomputed under another score variant,
    every other setting of `spec` kept: what detection would have stored with `score`."""
    spec = replace(spec, score=score)
    stored = ("teacher_norm", "student_norm", "diff", "is_confounder")
    columns: dict[str, list[Any]] = {k: [] for k in (*stored, "spans")}
    t_col, s_col = _raw_columns(score)
    for r in tokens.itertuples(index=False):
        fields, steps, texts = list(r.field), list(r.step), list(r.text)
        teacher, student = (np.asarray(getattr(r, col), dtype=float) for col in (t_col, s_col))
        protected = getattr(r, "protected", None)
        res = detect_sample(
            teacher,
            student,
            fields,
            steps,
            texts,
            spec,
            None if protected is None else np.asarray(protected, dtype=bool),
        )
        flags = res["is_confounder"]
        spans = confounder_spans(
            flags, fields, steps, list(r.char_start), list(r.char_end), texts, spec
        )
        for k in stored:
            columns[k].append(res[k].tolist())
        columns["spans"].append(spans_json(spans))
    return tokens.assign(**columns)


def instruction_tokens(tokens: pd.DataFrame) -> pd.DataFrame:
    """One row per non-whitespace instruction token (the tokens `detection_metrics` counts):
    id, kind, text, normalised scores, d, flag and planted label."""
    cols = [
        "field",
        "text",
        "kind",
        "teacher_norm",
        "student_norm",
        "diff",
        "is_confounder",
        "is_planted",
    ]
    long = tokens[["id", *cols]].explode(cols)
    long = long[(long["field"] == INSTRUCTION) & (long["kind"] != WHITESPACE)].drop(columns="field")
    return long.astype(
        {
            "teacher_norm": float,
            "student_norm": float,
            "diff": float,
            "is_confounder": bool,
            "is_planted": bool,
        }
    )


def kind_order(kinds: Sequence[str]) -> list[str]:
    """The kinds present, in the order of token_kinds' lists (planted kinds first on the world)."""
    present = set(kinds)
    return [k for k in dict.fromkeys(PLANTED_KINDS + CORPUS_KINDS) if k in present] + sorted(
        present - set(PLANTED_KINDS) - set(CORPUS_KINDS)
    )


def metrics_by_kind(tokens: pd.DataFrame) -> pd.DataFrame:
    """Per kind of instruction token (whitespace left out): tokens, flagged tokens and their
    share, and the mean normalised teacher, student and d over the scored ones (`n_scored`; NaN
    where none is). Planted numbers must get a lower d, and a higher flagged share, than the
    problem's own numbers for counterfactuals to remove distractors rather than the problem."""
    long = instruction_tokens(tokens)
    rows = []
    for kind in kind_order(long["kind"].tolist()):
        group = long[long["kind"] == kind]
        scored = group[np.isfinite(group["diff"])]
        n, flagged = len(group), int(group["is_confounder"].sum())
        rows.append(
            {
                "kind": kind,
                "n_tokens": n,
                "n_flagged": flagged,
                "share_flagged": flagged / n,
                "n_scored": len(scored),
                **{
                    f"mean_{name}": scored[col].mean() if len(scored) else math.nan
                    for name, col in (
                        ("teacher", "teacher_norm"),
                        ("student", "student_norm"),
                        ("diff", "diff"),
                    )
                },
            }
        )
    return pd.DataFrame.from_records(rows, columns=KIND_COLUMNS)


def available_scores(tokens: pd.DataFrame) -> list[str]:
    """The score variants whose raw columns the tokens hold with some finite value (scores from
    an older run lack the gradient × input column, and detection stores NaN for it)."""

    def finite(column: str) -> bool:
        return column in tokens.columns and any(
            np.isfinite(np.asarray(v, dtype=float)).any() for v in tokens[column]
        )

    return [s for s in SCORES if all(finite(c) for c in _raw_columns(s))]


def variant_comparison(
    tokens: pd.DataFrame, spec: DetectSpec, percentiles: Sequence[float]
) -> Comparison:
    """Every score variant at the configured setting `spec`, and swept over `percentiles`.

    The configured variant (`spec.score`) uses the stored flags, so its row equals metrics.json;
    the others are re-run from the raw columns (`rescore`). `variants` has per score: precision,
    recall, F1 against the planted labels (NaN without labels), the base rate (random flagging's
    precision), token counts, and the flagged share of each kind (`flagged_<kind>`).
    """
    variants, by_kind, sweeps = [], [], []
    available = available_scores(tokens)
    for score in (s for s in SCORES if s == spec.score or s in available):
        frame = tokens if score == spec.score else rescore(tokens, spec, score)
        m = detection_metrics(frame, spec)
        kinds = metrics_by_kind(frame)
        variants.append(
            {
                "score": score,
                "configured": score == spec.score,
                **_scores(m),
                "base_rate": m["base_rate"],
                "n_tokens": m["n_tokens"],
                "n_flagged": m["n_confounders"],
                "n_planted": m["n_planted"],
                **{
                    f"flagged_{k}": share for k, share in zip(kinds["kind"], kinds["share_flagged"])
                },
            }
        )
        by_kind.append(kinds.assign(score=score))
        sweeps.append(percentile_sweep(frame, spec, percentiles).assign(score=score))
    return Comparison(
        pd.DataFrame.from_records(variants),
        pd.concat(by_kind, ignore_index=True)[["score", *KIND_COLUMNS]],
        pd.concat(sweeps, ignore_index=True)[["score", *SWEEP_COLUMNS]],
    )


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
