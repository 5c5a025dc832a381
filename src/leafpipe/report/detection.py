"""The report's confounder detection: per seed its token-level precision, recall and F1 against
planted distractors, the random rate they must beat, the mean scores and the percentile sweep;
with several seeds a table of the headline figures first, pooled over every seed's tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from leafpipe.report.accuracy import MISSING


def _percent(value: Any) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"


def _rate(value: Any) -> str:
    """A share in percent; NaN (nothing to measure against) shows as missing, never as 0."""
    return MISSING if value is None or pd.isna(value) else f"{100 * value:.1f}%"


def _sweep_lines(sweep: pd.DataFrame, configured: Any, depth: int = 3) -> list[str]:
    """The percentile sweep as a table, the configured percentile (if detection used one) marked;
    `depth`: its heading's level."""
    lines = [
        "",
        "#" * depth + " Percentile sweep",
        "",
        "The stored teacher − student differences re-thresholded at other percentiles "
        "(same cap and span limits; instruction tokens). "
        "A flat precision near the random rate means no percentile would help. "
        "The configured percentile is marked when detection used the percentile strategy.",
        "",
    ]
    by_score = "score" in sweep.columns  # one sweep per score variant (detection/sweep.csv)
    lines += [
        "| "
        + ("score | " if by_score else "")
        + "percentile | precision | recall | F1 | flagged |",
        "|" + "---|" * (6 if by_score else 5),
    ]
    for r in sweep.itertuples(index=False):
        mark = (
            " (configured)"
            if configured is not None and float(r.percentile) == float(configured)
            else ""
        )
        rates = " | ".join(_rate(v) for v in (r.precision, r.recall, r.f1))
        score = f"{r.score} | " if by_score else ""
        lines.append(f"| {score}{r.percentile:g}{mark} | {rates} | {int(r.n_flagged)} |")
    if sweep[["precision", "recall"]].isna().all().all():
        lines += ["", f"{MISSING}: no planted labels, so precision and recall are undefined."]
    return lines


def _token_lines(detection: Mapping[str, Any]) -> list[str]:
    """Tokens scored and flagged, and against planted distractors precision, recall and F1 with
    the rate of flagging at random."""
    n_tokens, n_planted = detection.get("n_tokens"), detection.get("n_planted")
    counts = (
        f"{detection.get('n_samples')} samples, {n_tokens} scored tokens, "
        f"{detection.get('n_confounders')} flagged as confounders"
    )
    if not n_planted:
        # A real corpus has no planted distractors: precision and recall have nothing to count.
        lines = [
            counts + ". The corpus has no planted distractors, so precision and recall against "
            "them are undefined; the flagged tokens are in `detection/inspect.html`."
        ]
    else:
        lines = [
            "Token level: tokens flagged as confounders against tokens of planted distractors.",
            "",
            "| precision | recall | F1 |",
            "|---|---|---|",
            "| "
            + " | ".join(_percent(detection.get(k)) for k in ("precision", "recall", "f1"))
            + " |",
            "",
            counts + f", {n_planted} inside planted distractors.",
        ]
    if n_tokens and n_planted:
        lines.append(
            "Flagging tokens at random would give a precision of about "
            f"{_percent(n_planted / n_tokens)} (the planted share of tokens)."
        )
    return lines


def _mean_score_lines(means: Mapping[str, Any]) -> list[str]:
    """The mean scores of planted and other instruction tokens, when both were measured."""
    if not all(means.get(group) for group in ("planted", "other")):
        return []
    return [
        "",
        "Mean normalised gradient scores of instruction tokens (detection flags the lowest "
        "teacher − student differences, so it can only find planted tokens if their "
        "difference is clearly lower):",
        "",
        "| tokens | teacher | student | difference |",
        "|---|---|---|---|",
    ] + [
        f"| {group} | "
        + " | ".join(f"{means[group][k]:.3f}" for k in ("teacher", "student", "diff"))
        + " |"
        for group in ("planted", "other")
    ]


def _detection_body(
    detection: Mapping[str, Any], sweep: pd.DataFrame | None = None, depth: int = 3
) -> list[str]:
    """One replicate's detection quality; `depth`: the level of its sub-headings."""
    if not detection:
        return ["No detection metrics were given.", ""]
    lines = _token_lines(detection) + _mean_score_lines(detection.get("mean_scores") or {})
    settings = detection.get("settings") or {}
    if settings:
        lines += ["", "Settings:", ""] + [f"- `{k}`: {v}" for k, v in settings.items()]
    if sweep is not None and len(sweep):
        uses_percentile = settings.get("strategy", "percentile") == "percentile"
        lines += _sweep_lines(sweep, settings.get("percentile") if uses_percentile else None, depth)
    return lines + [""]


def pooled_detection_row(detection: Iterable[Mapping[str, Any]]) -> list[str]:
    """The seeds' token counts summed: precision, recall and F1 over every seed's tokens."""
    found = [m for m in detection if m.get("n_planted")]
    if not found:
        return []
    flagged = sum(m["n_confounders"] for m in found)
    planted = sum(m["n_planted"] for m in found)
    hits = sum(round(m["precision"] * m["n_confounders"]) for m in found)
    precision, recall = hits / flagged if flagged else 0.0, hits / planted
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    random_rate = planted / sum(m["n_tokens"] for m in found)
    return [
        f"| pooled | {_percent(precision)} | {_percent(recall)} | {_percent(f1)} "
        f"| {_percent(random_rate)} |"
    ]


def detection_section(
    detection: Mapping[int, Mapping[str, Any]],
    sweep: Mapping[int, pd.DataFrame] | None = None,
    extra: Mapping[int, str] | None = None,
) -> list[str]:
    """Detection per seed (each seed detects on its own world and models); with several seeds a
    table of the headline figures first. `extra`: per seed, Markdown that follows its body (the
    score variants, the breakdown by kind of token, the validity check)."""
    sweep, extra = sweep or {}, extra or {}
    lines = ["## Confounder detection", ""]
    if len(detection) <= 1:
        seed = next(iter(detection), None)
        return (
            lines
            + _detection_body(detection.get(seed, {}), sweep.get(seed))
            + [extra.get(seed, "")]
        )
    lines += [
        "Tokens flagged as confounders against tokens of planted distractors, per seed; "
        "random: the "
        "precision of flagging tokens at random (the planted share of tokens).",
        "",
        "| seed | precision | recall | F1 | random |",
        "|---|---|---|---|---|",
    ]
    for seed, metrics in detection.items():
        planted, tokens = metrics.get("n_planted"), metrics.get("n_tokens")
        random_rate = planted / tokens if planted and tokens else None
        cells = [
            _percent(metrics.get(k)) if planted else MISSING for k in ("precision", "recall", "f1")
        ]
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {_percent(random_rate)} |")
    lines += pooled_detection_row(detection.values()) + [""]
    for seed, metrics in detection.items():
        lines += [f"### Seed {seed}", ""] + _detection_body(metrics, sweep.get(seed), depth=4)
        lines += [extra.get(seed, "")]
    return lines
