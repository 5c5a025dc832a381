"""A sample's confounder spans: flagged tokens merged into character spans, and the text that
is never pruned.

Spans are what pruning removes (leafpipe.prune.counterfactuals) and what tokens.parquet's `spans`
column stores (docs/data-schemas.md): contiguous confounders of one field and one response scope,
within the length limits of `DetectSpec`, each response span with the offset where the next
response scope begins (`step_end`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from leafpipe.detect.token_kinds import overlaps
from leafpipe.text.templates import INSTRUCTION, RESPONSE

if TYPE_CHECKING:
    from leafpipe.detect.confounders import DetectSpec


def merge_spans(
    flags: Sequence[bool],
    fields: Sequence[str],
    steps: Sequence[int],
    starts: Sequence[int],
    ends: Sequence[int],
    texts: Sequence[str],
    join_whitespace: bool = False,
) -> list[dict[str, Any]]:
    """Contiguous confounders (same field and response scope, the `step` column) as character
    spans, with their token indices.

    With `join_whitespace` (leafpipe's rule), whitespace-only tokens between two confounders join
    them: they can never be confounders themselves, and splitting "9 birds" at its space would
    prune half a phrase. Without it (the authors' code), any unflagged token ends a span.
    """
    spans: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for i, flag in enumerate(flags):
        key = (fields[i], steps[i])
        if flag:
            if current is not None and (current["field"], current["step"]) == key:
                current["end"] = int(ends[i])
                current["tokens"].append(i)
            else:
                current = {
                    "field": fields[i],
                    "step": int(steps[i]),
                    "start": int(starts[i]),
                    "end": int(ends[i]),
                    "tokens": [i],
                }
                spans.append(current)
        elif current is not None and not (
            join_whitespace
            and texts[i].strip() == ""
            and key == (current["field"], current["step"])
        ):
            current = None
    return spans


def limit_span_lengths(
    spans: list[dict[str, Any]], flags: np.ndarray, spec: DetectSpec
) -> list[dict[str, Any]]:
    """Drop spans outside [min_span_tokens, max_span_tokens] confounder tokens, unflagging them."""
    kept = []
    for span in spans:
        n = len(span["tokens"])
        if n < spec.min_span_tokens or (
            spec.max_span_tokens is not None and n > spec.max_span_tokens
        ):
            flags[span["tokens"]] = False
        else:
            kept.append(span)
    return kept


def confounder_spans(
    flags: np.ndarray,
    fields: Sequence[str],
    steps: Sequence[int],
    starts: Sequence[int],
    ends: Sequence[int],
    texts: Sequence[str],
    spec: DetectSpec,
) -> list[dict[str, Any]]:
    """A sample's spans as tokens.parquet stores them: flagged tokens merged by `spec`'s rules,
    spans outside the length limits dropped (and unflagged in `flags` [n]), and each response
    span given `step_end`."""
    spans = merge_spans(flags, fields, steps, starts, ends, texts, spec.join_whitespace)
    spans = limit_span_lengths(spans, flags, spec)
    for span in spans:
        if span["field"] == RESPONSE:
            span["step_end"] = _next_scope_start(span["step"], fields, steps, starts)
    return spans


def spans_json(spans: Sequence[dict[str, Any]]) -> str:
    """tokens.parquet's `spans` cell: the spans without their token indices."""
    return json.dumps([{k: v for k, v in span.items() if k != "tokens"} for span in spans])


def _next_scope_start(
    step: int, fields: Sequence[str], steps: Sequence[int], starts: Sequence[int]
) -> int:
    """Where the response scope after `step` begins (its first token's offset): what a response
    counterfactual keeps as its training target, whether scopes are reasoning steps or segments
    (leafpipe.prune.counterfactuals.reasoning_step_end). A flagged scope is never the last, so one
    follows."""
    return next(int(a) for f, k, a in zip(fields, steps, starts) if f == RESPONSE and k > step)


def protected_spans(instruction: str, protect: Sequence[str]) -> list[tuple[int, int]]:
    """[start, end) of every occurrence of each protected text in the instruction."""
    return [
        (m.start(), m.end())
        for text in protect
        if text
        for m in re.finditer(re.escape(text), instruction)
    ]


def in_instruction_spans(
    spans: Sequence[Sequence[int]],
    fields: Sequence[str],
    starts: Sequence[int],
    ends: Sequence[int],
) -> list[bool]:
    """Whether each token is an instruction token overlapping one of the [start, end) spans."""
    return [f == INSTRUCTION and overlaps(s, e, spans) for f, s, e in zip(fields, starts, ends)]
