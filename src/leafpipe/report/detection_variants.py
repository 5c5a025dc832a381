"""The report's detection by score variant and by kind of token, from the inspect stage's
detection/variants.csv and detection/by_kind.csv (leafpipe.detect.quality).

A precision averaged over all instruction tokens hides the failure that matters (a detector that
flags every number deletes the problem's own numbers as often as the planted ones), so the
section reads each variant's lift over flagging at random and its flagged share by kind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from leafpipe.detect.quality import METRICS, kind_order
from leafpipe.report.tables import markdown_table


def _rate(value: Any) -> str:
    return "—" if value is None or pd.isna(value) else f"{100 * float(value):.1f}%"


def _score(value: Any) -> str:
    return "—" if value is None or pd.isna(value) else f"{float(value):.3f}"


def _variant_lines(variants: pd.DataFrame, kinds: Sequence[str]) -> list[str]:
    """One row per score variant: its rates, its lift over random, its flagged share by kind."""
    labelled = variants["n_planted"].gt(0).any()
    lines = ["### Detection by score variant", ""]
    lines.append(
        "Each row re-runs detection at the configured setting with another way of turning the two "
        "models' token scores into d (`detection.score`; the configured one is marked). A variant "
        "is useful only if its precision is well above the base rate (flagging at random)"
        + (
            ", and if it flags a larger share of planted numbers than of the problem's own numbers."
            if "planted_number" in kinds
            else "."
            if labelled
            else "; without planted labels only the flagged shares by kind can be compared."
        )
    )
    lines.append("")
    header = ["score", "precision", "recall", "F1", "× random", "flagged"] + [
        f"flagged: {k}" for k in kinds
    ]
    rows = []
    for r in variants.to_dict("records"):
        lift = (
            r["precision"] / r["base_rate"]
            if r["base_rate"] and not pd.isna(r["precision"])
            else math.nan
        )
        rows.append(
            [
                r["score"] + (" (configured)" if r["configured"] else ""),
                *(_rate(r[k]) for k in METRICS),
                "—" if pd.isna(lift) else f"{lift:.2f}",
                str(int(r["n_flagged"])),
                *(_rate(r.get(f"flagged_{k}")) for k in kinds),
            ]
        )
    return lines + markdown_table(header, rows)


def _kind_lines(by_kind: pd.DataFrame, kinds: Sequence[str]) -> list[str]:
    """One row per score variant and kind of token: its flagged share and mean scores."""
    lines = ["", "### Detection by kind of token", ""]
    lines.append(
        "Mean normalised teacher and student scores and d per kind of instruction token (lower d: "
        "more confounding). "
        + (
            "Planted numbers must get a lower d than the problem's own numbers, or counterfactuals "
            "delete the numbers the problem needs as often as the distractors."
            if "planted_number" in kinds
            else "Without planted labels, a d far lower on numbers than on words means detection "
            "prunes the problem's quantities."
        )
    )
    lines.append("")
    header = ["score", "kind", "tokens", "flagged", "teacher", "student", "d"]
    rows = [
        [
            r["score"],
            r["kind"],
            str(int(r["n_tokens"])),
            _rate(r["share_flagged"]),
            *(_score(r[f"mean_{k}"]) for k in ("teacher", "student", "diff")),
        ]
        for r in by_kind.to_dict("records")
    ]
    return lines + markdown_table(header, rows)


def variants_section(
    variants_csv: str | os.PathLike[str], by_kind_csv: str | os.PathLike[str]
) -> str:
    """The report's section on detection by score variant and by kind of token (Markdown), from
    the inspect stage's detection/variants.csv and detection/by_kind.csv."""
    variants, by_kind = pd.read_csv(variants_csv), pd.read_csv(by_kind_csv)
    kinds = kind_order(by_kind["kind"].tolist())
    return "\n".join(_variant_lines(variants, kinds) + _kind_lines(by_kind, kinds) + [""])
