"""The report's counterfactual validity section, from each level's
counterfactuals/{level}.validity.json (leafpipe.prune.validity.summarize).

It shows what the check kept and dropped, what other margins would have kept, and, on a corpus
with planted labels, whether the dropped spans are the ones the answer needs and what keeping
only the kept spans does to detection's precision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Summary = Mapping[str, Any]


def _share(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return "—"
    return f"{part} ({100 * part / whole:.1f}%)"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


# What the section's first table shows; the check itself is leafpipe.prune.validity's.
GUIDE = (
    "A counterfactual is kept when the teacher's mean response loss per token (nats), on the "
    "text it trains on, rises by at most the margin over the original's loss on the same text "
    "(and the student's too, when `validity.student` is set). Planted: removed instruction "
    "spans that overlap a planted distractor."
)


def _counts_lines(summaries: Sequence[Summary]) -> list[str]:
    """Per level: the check's setting, counterfactuals kept and dropped, planted among each."""
    lines = [
        "## Counterfactual validity",
        "",
        GUIDE,
        "",
        "| level | check | margin | counterfactuals | kept | dropped | planted among kept "
        "| planted among dropped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        kept, dropped = s["spans"]["kept"], s["spans"]["dropped"]
        check = ("on" + (" (teacher and student)" if s["student"] else "")) if s["check"] else "off"
        lines.append(
            f"| {s['level']} | {check} | {s['margin']:g} | {s['counterfactuals']} | {s['kept']} | "
            f"{s['dropped']} | {_share(kept['planted'], kept['instruction'])} | "
            f"{_share(dropped['planted'], dropped['instruction'])} |"
        )
    return lines


def _margin_lines(summaries: Sequence[Summary]) -> list[str]:
    """Counterfactuals kept at each margin of the sweep, for the levels that ran the check."""
    swept = [s for s in summaries if s["kept_at_margin"]]
    if not swept:
        return []
    margins = sorted({m for s in swept for m in s["kept_at_margin"]}, key=float)
    lines = [
        "",
        "Counterfactuals each margin would keep (with planted spans among their "
        "instruction removals, on a labelled corpus):",
        "",
        "| level | " + " | ".join(margins) + " |",
        "|---|" + "---|" * len(margins),
    ]
    for s in swept:
        cells = [
            "—"
            if c is None
            else f"{c['kept']}" + ("" if c["planted"] is None else f" ({c['planted']} planted)")
            for c in (s["kept_at_margin"].get(m) for m in margins)
        ]
        lines.append(f"| {s['level']} | " + " | ".join(cells) + " |")
    return lines


def _rise_lines(summaries: Sequence[Summary]) -> list[str]:
    """The teacher's mean rise for spans over a planted distractor and for the others."""
    rises = [s for s in summaries if s["mean_teacher_rise"]]
    if not rises:
        return []
    lines = [
        "",
        "The teacher's mean rise (nats per token) when the pruned instruction span "
        "overlaps a planted distractor and when it does not:",
        "",
        "| level | planted | other |",
        "|---|---|---|",
    ]
    return lines + [
        f"| {s['level']} | "
        + " | ".join(
            "—" if s["mean_teacher_rise"][k] is None else f"{s['mean_teacher_rise'][k]:.3f}"
            for k in ("planted", "other")
        )
        + " |"
        for s in rises
    ]


def _token_lines(summaries: Sequence[Summary]) -> list[str]:
    """Detection against planted tokens, of every counterfactual and of the kept ones."""
    labelled = [s for s in summaries if s["tokens"]]
    if not labelled:
        return []
    lines = [
        "",
        "Detection against planted tokens, counting as flagged only confounders inside "
        "pruned spans: of every counterfactual, and of the kept ones only.",
        "",
        "| level | spans | precision | recall | F1 | flagged | random rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in labelled:
        for which, label in (("all", "all counterfactuals"), ("kept", "kept by the check")):
            t = s["tokens"][which]
            lines.append(
                f"| {s['level']} | {label} | {_rate(t['precision'])} | {_rate(t['recall'])} | "
                f"{_rate(t['f1'])} | {t['n_flagged']} | {_rate(t['base_rate'])} |"
            )
    return lines


def validity_section(summary_paths: Sequence[str | Path]) -> str:
    """The report's section on the validity check, one row per level's summary."""
    summaries = [json.loads(Path(p).read_text(encoding="utf-8")) for p in summary_paths]
    lines = (
        _counts_lines(summaries)
        + _margin_lines(summaries)
        + _rise_lines(summaries)
        + _token_lines(summaries)
    )
    return "\n".join(lines) + "\n"
