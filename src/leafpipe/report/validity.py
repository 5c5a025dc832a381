"""The report's counterfactual validity section, from each level's
counterfactuals/{level}.validity.json (leafpipe.prune.validity.summarize).

It shows what the check kept and dropped, what other margins would have kept, and, on a corpus
with planted labels, whether the dropped spans are the ones the answer needs and what keeping
only the kept spans does to detection's precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from leafpipe.files.atomic import read_json
from leafpipe.report.tables import markdown_table

Summary = Mapping[str, Any]


def _share(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return "—"
    return f"{part} ({100 * part / whole:.1f}%)"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _nats(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


# What the section's first table shows; the check itself is leafpipe.prune.validity's.
GUIDE = (
    "A counterfactual is kept when the teacher's mean response loss per token (nats), on the "
    "text it trains on, rises by at most the margin over the original's loss on the same text "
    "(and the student's too, when `validity.student` is set). Planted: removed instruction "
    "spans that overlap a planted distractor."
)
COUNTS_HEADER = (
    "level",
    "check",
    "margin",
    "counterfactuals",
    "kept",
    "dropped",
    "planted among kept",
    "planted among dropped",
)


def _check(s: Summary) -> str:
    """Whether a level ran the check, and on which models."""
    if not s["check"]:
        return "off"
    return "on" + (" (teacher and student)" if s["student"] else "")


def _counts_row(s: Summary) -> list[str]:
    """One level's line of the first table."""
    kept, dropped = s["spans"]["kept"], s["spans"]["dropped"]
    return [
        str(s["level"]),
        _check(s),
        f"{s['margin']:g}",
        str(s["counterfactuals"]),
        str(s["kept"]),
        str(s["dropped"]),
        _share(kept["planted"], kept["instruction"]),
        _share(dropped["planted"], dropped["instruction"]),
    ]


def _counts_lines(summaries: Sequence[Summary]) -> list[str]:
    """Per level: the check's setting, counterfactuals kept and dropped, planted among each."""
    rows = [_counts_row(s) for s in summaries]
    return ["## Counterfactual validity", "", GUIDE, "", *markdown_table(COUNTS_HEADER, rows)]


def _table_below(intro: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A further table, under its introduction; nothing when no level has rows for it, so a
    section no level measured is left out rather than shown empty."""
    return ["", intro, "", *markdown_table(header, rows)] if rows else []


def _kept_cell(kept: Mapping[str, Any] | None) -> str:
    """Counterfactuals one margin keeps, with the planted spans among them where labelled."""
    if kept is None:
        return "—"
    planted = "" if kept["planted"] is None else f" ({kept['planted']} planted)"
    return f"{kept['kept']}{planted}"


def _margin_lines(summaries: Sequence[Summary]) -> list[str]:
    """Counterfactuals kept at each margin of the sweep, for the levels that ran the check."""
    swept = [s for s in summaries if s["kept_at_margin"]]
    margins = sorted({m for s in swept for m in s["kept_at_margin"]}, key=float)
    rows = [
        [str(s["level"]), *(_kept_cell(s["kept_at_margin"].get(m)) for m in margins)] for s in swept
    ]
    return _table_below(
        "Counterfactuals each margin would keep (with planted spans among their "
        "instruction removals, on a labelled corpus):",
        ["level", *margins],
        rows,
    )


def _rise_lines(summaries: Sequence[Summary]) -> list[str]:
    """The teacher's mean rise for spans over a planted distractor and for the others."""
    rows = [
        [str(s["level"]), *(_nats(s["mean_teacher_rise"][k]) for k in ("planted", "other"))]
        for s in summaries
        if s["mean_teacher_rise"]
    ]
    return _table_below(
        "The teacher's mean rise (nats per token) when the pruned instruction span "
        "overlaps a planted distractor and when it does not:",
        ["level", "planted", "other"],
        rows,
    )


def _token_row(level: str, spans: str, t: Mapping[str, Any]) -> list[str]:
    """One line of the detection table: `t` is detection's figures on those spans."""
    return [
        level,
        spans,
        _rate(t["precision"]),
        _rate(t["recall"]),
        _rate(t["f1"]),
        str(t["n_flagged"]),
        _rate(t["base_rate"]),
    ]


def _token_lines(summaries: Sequence[Summary]) -> list[str]:
    """Detection against planted tokens, of every counterfactual and of the kept ones."""
    rows = [
        _token_row(str(s["level"]), label, s["tokens"][which])
        for s in summaries
        if s["tokens"]
        for which, label in (("all", "all counterfactuals"), ("kept", "kept by the check"))
    ]
    return _table_below(
        "Detection against planted tokens, counting as flagged only confounders inside "
        "pruned spans: of every counterfactual, and of the kept ones only.",
        ["level", "spans", "precision", "recall", "F1", "flagged", "random rate"],
        rows,
    )


def validity_section(summary_paths: Sequence[str | Path]) -> str:
    """The report's section on the validity check, one row per level's summary."""
    summaries = [read_json(p) for p in summary_paths]
    lines = (
        _counts_lines(summaries)
        + _margin_lines(summaries)
        + _rise_lines(summaries)
        + _token_lines(summaries)
    )
    return "\n".join(lines) + "\n"
