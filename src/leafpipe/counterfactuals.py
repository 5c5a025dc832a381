"""Counterfactual samples: the original with one confounding span pruned, do(X \\ A).

A span is first widened to whole words (a BPE token can be half a word, and "Ben ns 14 cards"
is noise, not an intervention); then only the span and one of the spaces around it are removed,
and every other character of the sample is kept as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from leafpipe.templates import INSTRUCTION, RESPONSE

LEVELS = {"instr": (INSTRUCTION,), "instr_resp": (INSTRUCTION, RESPONSE)}


def widen_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Grow [start, end) so that it neither begins nor ends inside a word."""
    while 0 < start < len(text) and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while 0 < end < len(text) and text[end - 1].isalnum() and text[end].isalnum():
        end += 1
    return start, end


def prune(text: str, start: int, end: int) -> str:
    """Remove text[start:end] and close the gap with exactly the whitespace that was there."""
    left, right = text[:start], text[end:]
    if left.endswith(" ") and (right.startswith((" ", "\n", ".", ",", "?", "!")) or not right):
        left = left[:-1]
    elif not left and right.startswith(" "):
        right = right[1:]
    return left + right


def counterfactual_rows(
    row: dict[str, Any], spans: Iterable[dict[str, Any]], fields: Sequence[str]
) -> list[dict[str, Any]]:
    """The original row and one counterfactual per span in `fields`."""
    source_id = str(row["id"])
    out = [{
        "id": source_id, "source_id": source_id, "kind": "original",
        "instruction": row["instruction"], "response": row["response"], "removed": [],
    }]
    seen = set()
    for span in spans:
        field = span["field"]
        if field not in fields:
            continue
        start, end = widen_to_words(row[field], span["start"], span["end"])
        pruned = prune(row[field], start, end)
        if not pruned.strip() or (field, pruned) in seen:
            continue  # pruned to nothing, or the same counterfactual as a neighbouring span
        seen.add((field, pruned))
        out.append({
            "id": f"{source_id}#cf{len(out)}", "source_id": source_id, "kind": "counterfactual",
            "instruction": row["instruction"], "response": row["response"], field: pruned,
            "removed": [{"field": field, "start": start, "end": end, "text": row[field][start:end]}],
        })
    return out


def build_counterfactuals(
    corpus: Sequence[dict[str, Any]], detections: pd.DataFrame, level: str
) -> list[dict[str, Any]]:
    """Originals in corpus order, each followed by its counterfactuals (docs/data-schemas.md)."""
    if level not in LEVELS:
        raise ValueError(f"unknown counterfactual level {level!r}; choose one of {sorted(LEVELS)}")
    spans_by_id = dict(zip(detections["id"], detections["spans"]))
    rows: list[dict[str, Any]] = []
    for row in corpus:
        spans = json.loads(spans_by_id.get(str(row["id"]), "[]"))
        rows.extend(counterfactual_rows(row, spans, LEVELS[level]))
    return rows
