"""Inspection of confounder detection: see the scores, not just the precision.

Detection's metrics say *whether* the flagged tokens match the planted distractors; they do not
say why. This module writes what a person needs to judge that: an HTML page with each
instruction's tokens coloured by teacher, student and difference scores (flags and planted
labels marked), histograms of those scores for planted and other tokens, and a plot of the
percentile sweep of every score variant (computed by leafpipe.detect.quality), so a poor
result can be told apart from a poorly chosen percentile or a poorly chosen score.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leafpipe.files.atomic import atomic_path, write_text
from leafpipe.text.templates import INSTRUCTION

# The rows of the page and panels of the histograms: (label, tokens.parquet column).
SHOWN = (("teacher", "teacher_norm"), ("student", "student_norm"), ("difference", "diff"))


def _planted(row: Any, n: int) -> np.ndarray:
    """A sample's planted labels; all False when the tokens carry none (not the world)."""
    planted = getattr(row, "is_planted", None)
    return np.zeros(n, dtype=bool) if planted is None else np.asarray(planted, dtype=bool)


def _instruction_scores(tokens: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Finite scores of non-whitespace instruction tokens (the tokens metrics count), and labels."""
    values: dict[str, list[float]] = {col: [] for _, col in SHOWN}
    planted: list[bool] = []
    for r in tokens.itertuples(index=False):
        labels = _planted(r, len(r.text))
        for i, (f, text) in enumerate(zip(r.field, r.text)):
            if f != INSTRUCTION or not text.strip() or not np.isfinite(r.diff[i]):
                continue
            for _, col in SHOWN:
                values[col].append(float(getattr(r, col)[i]))
            planted.append(bool(labels[i]))
    return {k: np.asarray(v) for k, v in values.items()}, np.asarray(planted, dtype=bool)


def _save_png(fig: Figure, path: str | os.PathLike[str]) -> None:
    FigureCanvasAgg(fig)  # explicit Agg: no display, no pyplot state shared between calls
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def write_histograms(tokens: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Score distributions of planted vs other instruction tokens (one group when unlabelled).

    Detection can only work if planted tokens have clearly lower differences; overlapping
    histograms show at a glance that it cannot.
    """
    values, planted = _instruction_scores(tokens)
    groups = (
        [("planted", planted, "C3"), ("other", ~planted, "C0")]
        if planted.any()
        else [("all instruction tokens", np.ones(planted.shape, dtype=bool), "C0")]
    )
    fig = Figure(figsize=(12, 3.6))
    bins = np.linspace(0.0, 1.0, 21)
    for ax, (name, col) in zip(fig.subplots(1, 3), SHOWN):
        for label, mask, colour in groups:
            data = values[col][mask]
            if data.size:
                ax.hist(
                    data,
                    bins=bins,
                    density=True,
                    histtype="step",
                    linewidth=1.8,
                    color=colour,
                    label=f"{label} (n={data.size})",
                )
        ax.set_title(f"{name} ({col})")
        ax.set_xlabel("normalised score")
        ax.set_xlim(0, 1)
        if ax.has_data():
            ax.legend(fontsize=8)
        else:
            ax.text(
                0.5,
                0.5,
                "no scored instruction tokens",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
    fig.axes[0].set_ylabel("density")
    _save_png(fig, path)


def _plot_variants(
    axes: Sequence[Any], sweep: pd.DataFrame, labelled: bool, configured_score: str | None
) -> None:
    """One line per score variant on each of the three panels (precision, recall, flagged
    tokens), the configured variant drawn thicker; precision and recall only when `labelled`."""
    precision_ax, recall_ax, flagged_ax = axes
    groups = (
        list(sweep.groupby("score", sort=False)) if "score" in sweep.columns else [(None, sweep)]
    )
    for j, (score, rows) in enumerate(groups):
        chosen = score is None or score == configured_score
        style = {
            "marker": "o",
            "color": f"C{j}",
            "linewidth": 2.4 if chosen else 1.2,
            "label": (score or "detection")
            + (" (configured)" if score is not None and chosen else ""),
        }
        for ax, col in (
            (precision_ax, "precision"),
            (recall_ax, "recall"),
            (flagged_ax, "n_flagged"),
        ):
            if col == "n_flagged" or labelled:
                ax.plot(rows["percentile"], rows[col], **style)


def _mark_panels(
    axes: Sequence[Any], labelled: bool, configured: float | None, base_rate: float | None
) -> None:
    """Axis labels, a note where precision and recall are undefined (no planted labels), the
    precision of a random choice, and the configured percentile."""
    precision_ax, recall_ax, flagged_ax = axes
    for ax, name in ((precision_ax, "precision"), (recall_ax, "recall")):
        ax.set_ylabel(name)
        if not labelled:
            ax.text(
                0.5,
                0.5,
                f"no planted labels: {name} is undefined",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            continue
        ax.set_ylim(0, 1)
    if labelled and base_rate is not None:
        precision_ax.axhline(
            base_rate, color="grey", linestyle=":", label=f"random ({base_rate:.3f})"
        )
    flagged_ax.set_ylabel("flagged tokens")
    flagged_ax.set_xlabel("percentile of the confounder score d")
    if configured is not None:
        for ax in (precision_ax, recall_ax, flagged_ax):
            ax.axvline(
                configured,
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"configured percentile ({configured:g})" if ax is precision_ax else None,
            )


def write_sweep_plot(
    sweep: pd.DataFrame,
    path: str | os.PathLike[str],
    configured: float | None = None,
    base_rate: float | None = None,
    configured_score: str | None = None,
) -> None:
    """Precision, recall and flagged tokens against the percentile, one line per score variant
    (`sweep`'s `score` column; one unnamed line without it), the configured percentile and
    variant marked.

    The flagged-token panel is drawn for an unlabelled corpus too, where precision and recall
    are undefined.
    """
    fig = Figure(figsize=(7, 8))
    axes = fig.subplots(3, 1, sharex=True, height_ratios=[2, 2, 1])
    precision_ax, _, flagged_ax = axes
    labelled = sweep[["precision", "recall"]].notna().to_numpy().any()
    _plot_variants(axes, sweep, labelled, configured_score)
    _mark_panels(axes, labelled, configured, base_rate)
    precision_ax.set_title(
        "Detection quality against the percentile, per score variant (instruction tokens)"
    )
    for ax in (precision_ax, flagged_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save_png(fig, path)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table.metrics td, table.metrics th { padding: 2px 10px; text-align: right; }
.sample { margin: 1.2em 0; padding-top: .4em; border-top: 1px solid #ccc; }
.row { display: flex; gap: .6em; margin: 2px 0; }
.label { flex: 0 0 6.5em; font-size: .8em; color: #555; padding-top: 3px; }
.text { font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.9; }
.t { padding: 1px 0; }
.t.na { background: repeating-linear-gradient(45deg, #eee, #eee 3px, #ddd 3px, #ddd 6px); }
.t.c { text-decoration: underline; text-decoration-thickness: 2px; text-underline-offset: 3px; }
.t.p { outline: 1.5px solid #1f5fbf; outline-offset: -1px; }
.legend span.t { margin-right: 1em; }
"""


def _colour(score: float) -> str:
    """White (0) to red (1): proportional, so equal steps of score look like equal steps of
    colour."""
    fade = round(255 * (1.0 - min(max(score, 0.0), 1.0)))
    return f"rgb(255,{fade},{fade})"


def _token(text: str, score: float, flagged: bool, planted: bool, tip: str) -> str:
    classes = ["t"] + (["c"] if flagged else []) + (["p"] if planted else [])
    style = ""
    if np.isfinite(score):
        style = f' style="background:{_colour(score)}"'
    else:
        classes.append("na")
    return (
        f'<span class="{" ".join(classes)}"{style} title="{html.escape(tip)}">'
        f"{html.escape(text)}</span>"
    )


def _in_spans(r: Any, spans: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Instruction tokens inside a detected span, whitespace joining two confounders included."""
    ranges = [(s["start"], s["end"]) for s in spans if s["field"] == INSTRUCTION]
    return [
        f == INSTRUCTION and any(a <= s and e <= b for a, b in ranges)
        for f, s, e in zip(r.field, r.char_start, r.char_end)
    ]


def _sample_html(r: Any) -> str:
    n = len(r.text)
    planted = _planted(r, n)
    in_span = _in_spans(r, json.loads(getattr(r, "spans", None) or "[]"))
    idx = [i for i in range(n) if r.field[i] == INSTRUCTION]
    tips = {
        i: " · ".join(f"{name} {float(getattr(r, col)[i]):.3f}" for name, col in SHOWN) for i in idx
    }
    rows = []
    for name, col in SHOWN:
        scores = getattr(r, col)
        cells = "".join(
            _token(
                str(r.text[i]),
                float(scores[i]),
                in_span[i] or bool(r.is_confounder[i]),
                bool(planted[i]),
                tips[i],
            )
            for i in idx
        )
        rows.append(
            f'<div class="row"><div class="label">{name}</div><div class="text">{cells}</div></div>'
        )
    body = "\n".join(rows) if idx else "<p>No instruction tokens.</p>"
    n_flag = sum(bool(r.is_confounder[i]) for i in idx)
    n_plant = int(sum(planted[i] for i in idx))
    return (
        f'<div class="sample"><h3>{html.escape(str(r.id))}</h3>'
        f"<p>{len(idx)} instruction tokens, {n_flag} flagged, {n_plant} planted.</p>\n{body}</div>"
    )


def _metric(value: Any, labelled: bool) -> str:
    if not labelled:
        return "n/a"
    return "—" if value is None else f"{100 * float(value):.1f}%"


def _header_html(metrics: Mapping[str, Any]) -> str:
    labelled = bool(metrics.get("n_planted"))
    cells = "".join(
        f"<td>{_metric(metrics.get(k), labelled)}</td>"
        for k in ("precision", "recall", "f1", "base_rate")
    )
    counts = (
        f"{metrics.get('n_samples')} samples, {metrics.get('n_tokens')} instruction tokens, "
        f"{metrics.get('n_confounders')} flagged, {metrics.get('n_planted')} planted."
    )
    note = (
        ""
        if labelled
        else (
            "<p>No planted labels: precision, recall and F1 cannot be measured on this corpus.</p>"
        )
    )
    settings = ", ".join(
        f"{html.escape(str(k))} = {html.escape(str(v))}"
        for k, v in (metrics.get("settings") or {}).items()
    )
    return (
        '<table class="metrics"><tr><th>precision</th><th>recall</th><th>F1</th>'
        "<th>base rate</th></tr>"
        f"<tr>{cells}</tr></table><p>{html.escape(counts)}</p>{note}"
        f"<p>Settings: {settings or 'not recorded'}.</p>"
    )


def _legend_html() -> str:
    ramp = "".join(
        _token(f"{s:.2f}", s, False, False, f"score {s:.2f}") for s in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    return (
        '<div class="legend"><p><b>Legend.</b> Background: normalised score, white (0) to red (1): '
        f'<span class="text">{ramp}</span>. '
        "Rows: the teacher's and the student's min-max gradient norms, and their min-max "
        "difference (teacher − student); detection flags the <i>lowest</i> differences, the "
        "palest cells of the difference row.</p><p>"
        f"{_token('underlined', 0.0, True, False, 'detected')} detected confounder span "
        f"{_token('boxed', 0.0, False, True, 'planted')} planted distractor (world only) "
        f"{_token('hatched', math.nan, False, False, 'no score')} no score in this scope. "
        "Hover a token for its three scores.</p></div>"
    )


def write_inspection_html(
    tokens: pd.DataFrame,
    metrics: Mapping[str, Any],
    path: str | os.PathLike[str],
    n_samples: int = 20,
) -> None:
    """One self-contained page (inline CSS, no scripts, no network) for the first `n_samples`
    samples in corpus order: a fixed choice, so two runs of the same data show the same page."""
    shown = tokens.head(n_samples)
    samples = "\n".join(_sample_html(r) for r in shown.itertuples(index=False))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>LeaF confounder detection: inspection</title>"
        f"<style>{_CSS}</style></head><body>\n"
        "<h1>Confounder detection: inspection</h1>\n"
        f"{_header_html(metrics)}\n{_legend_html()}\n"
        f"<h2>First {len(shown)} of {len(tokens)} samples (corpus order), instruction tokens</h2>\n"
        f"{samples}\n</body></html>\n"
    )
    write_text(page, Path(path))
