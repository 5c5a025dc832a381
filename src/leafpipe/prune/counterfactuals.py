"""Counterfactual samples: the original with one confounding span pruned, do(X \\ A).

With `widen` (leafpipe's default) a span is first widened to whole words (a BPE token can be
half a word, and "Ben ns 14 cards" is noise, not an intervention); without it exactly the
flagged characters go, as in the paper's code. Then only the span and one of the spaces around
it are removed, and every other character of the sample is kept as it was.

A span in reasoning step k of the response gives a counterfactual whose response is reasoning
steps 0..k with the span pruned followed by the later reasoning steps unchanged, and whose
`train_from` is where reasoning step k + 1 starts in that text: the pruned reasoning steps are
context, only the later ones are trained (`EncodedSample`), as in the paper's code. A span in the
last reasoning step has nothing after it and gives none. A row's system prompt goes unchanged
into each of its counterfactuals.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from leafpipe.text.reasoning_steps import reasoning_step_starts
from leafpipe.text.templates import INSTRUCTION, RESPONSE

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


def reasoning_step_end(span: dict[str, Any], starts: Sequence[int], length: int) -> int:
    """Where the reasoning step holding `span` ends (the next reasoning step's start), or `length`
    for the last one. Detection may write it into the span as `step_end`; else the
    span's `step` index is looked up in the response's reasoning-step starts."""
    if "step_end" in span:
        return int(span["step_end"])
    k = int(span["step"]) + 1
    return starts[k] if k < len(starts) else length


def _cut(span: dict[str, Any], text: str, starts: Sequence[int]) -> int | None:
    """Where the text that `span` prunes ends: the whole instruction, or the response up to the
    end of the span's reasoning step; training starts after it. None for a span of the last
    reasoning step, which leaves nothing to train on."""
    if span["field"] != RESPONSE:
        return len(text)
    cut = reasoning_step_end(span, starts, len(text))
    return None if cut >= len(text) else cut


def _system(row: dict[str, Any]) -> dict[str, str]:
    """The row's system prompt as the one field every row made from it carries, or no field: a
    corpus without system prompts gives the same files as before they existed. Pruning never
    touches it; it is template text to detection."""
    system = row.get("system")
    return {} if system is None else {"system": system}


def _original(row: dict[str, Any]) -> dict[str, Any]:
    """The row itself as the first of its counterfactual rows: nothing removed, all trained."""
    source_id = str(row["id"])
    return {
        "id": source_id,
        "source_id": source_id,
        "kind": "original",
        "instruction": row["instruction"],
        "response": row["response"],
        **_system(row),
        "removed": [],
        "train_from": 0,
    }


def counterfactual_rows(
    row: dict[str, Any],
    spans: Iterable[dict[str, Any]],
    fields: Sequence[str],
    *,
    starts: Sequence[int] = (0,),
    widen: bool = True,
) -> list[dict[str, Any]]:
    """The original row and one counterfactual per span in `fields`.

    `starts` are the character offsets where the response's reasoning steps begin, split as
    scoring split it (`leafpipe.text.reasoning_steps.reasoning_step_starts`); only response spans
    need them.
    """
    source_id = str(row["id"])
    out = [_original(row)]
    seen = set()
    for span in spans:
        field = span["field"]
        if field not in fields:
            continue
        text = row[field]
        cut = _cut(span, text, starts)
        if cut is None:
            continue  # a span of the last reasoning step: no later reasoning step to train on
        start, end = (
            widen_to_words(text, span["start"], span["end"])
            if widen
            else (span["start"], span["end"])
        )
        head = prune(text[:cut], start, end)
        pruned = head + text[cut:]
        if not pruned.strip() or (field, pruned) in seen:
            continue  # pruned to nothing, or the same counterfactual as a neighbouring span
        seen.add((field, pruned))
        out.append(
            {
                "id": f"{source_id}#cf{len(out)}",
                "source_id": source_id,
                "kind": "counterfactual",
                "instruction": row["instruction"],
                "response": row["response"],
                **_system(row),
                field: pruned,
                "removed": [{"field": field, "start": start, "end": end, "text": text[start:end]}],
                "train_from": len(head) if field == RESPONSE else 0,
            }
        )
    return out


def build_counterfactuals(
    corpus: Sequence[dict[str, Any]],
    detections: pd.DataFrame,
    level: str,
    *,
    split: str = "lines",
    widen: bool = True,
) -> list[dict[str, Any]]:
    """Originals in corpus order, each followed by its counterfactuals (docs/data-schemas.md).

    `split` is the reasoning-step split scoring used (`scoring.steps`), so a span's `step`
    indexes the same reasoning steps here; `widen` widens spans to whole words
    (`detection.widen_words`).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown counterfactual level {level!r}; choose one of {sorted(LEVELS)}")
    spans_by_id = dict(zip(detections["id"], detections["spans"]))
    rows: list[dict[str, Any]] = []
    for row in corpus:
        spans = json.loads(spans_by_id.get(str(row["id"]), "[]"))
        starts = (
            reasoning_step_starts(row["response"], split) if RESPONSE in LEVELS[level] else (0,)
        )
        rows.extend(counterfactual_rows(row, spans, LEVELS[level], starts=starts, widen=widen))
    return rows
