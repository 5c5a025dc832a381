"""Stage 1b: confounding tokens are those the student leans on and the teacher does not.

Per sample and per scope (the instruction; at response level also the earlier reasoning steps),
each model's gradient norms are min-max normalised, d = teacher − student is min-max normalised
again, and tokens at or below the p-th percentile of d (threshold capped) are confounders.
Scopes are normalised separately because response tokens carry systematically larger gradients
(they sit next to the tokens being predicted) and would otherwise crowd out the instruction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from leafpipe.templates import INSTRUCTION, RESPONSE


@dataclass(frozen=True)
class DetectSpec:
    percentile: float = 10.0  # the paper's code: 10 for code, 5 or 10 for math
    cap: float = 0.5  # the threshold on d never exceeds this
    response_level: bool = True  # also detect in earlier reasoning steps


def minmax(x: np.ndarray) -> np.ndarray | None:
    """Scale to [0, 1]; None when all values are equal (no token stands out, nothing to rank)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 0.0:
        return None
    return (x - lo) / (hi - lo)


def _scopes(fields: Sequence[str], steps: Sequence[int], response_level: bool) -> list[np.ndarray]:
    fields_a, steps_a = np.asarray(fields), np.asarray(steps)
    scopes = [np.flatnonzero(fields_a == INSTRUCTION)]
    if response_level:
        resp = fields_a == RESPONSE
        last = steps_a[resp].max(initial=-1)
        scopes.append(np.flatnonzero(resp & (steps_a < last)))
    return [s for s in scopes if s.size > 1]


def detect_sample(
    teacher: np.ndarray, student: np.ndarray, fields: Sequence[str], steps: Sequence[int],
    texts: Sequence[str], spec: DetectSpec,
) -> dict[str, np.ndarray]:
    """Normalised scores, diff and confounder flags for one sample's tokens (NaN outside scopes)."""
    n = len(texts)
    out = {k: np.full(n, np.nan) for k in ("teacher_norm", "student_norm", "diff")}
    flags = np.zeros(n, dtype=bool)
    for idx in _scopes(fields, steps, spec.response_level):
        t, s = minmax(teacher[idx]), minmax(student[idx])
        if t is None or s is None:
            continue
        d = minmax(t - s)
        out["teacher_norm"][idx], out["student_norm"][idx] = t, s
        if d is None:
            continue
        out["diff"][idx] = d
        threshold = min(float(np.percentile(d, spec.percentile)), spec.cap)
        content = np.array([bool(texts[i].strip()) for i in idx])
        flags[idx] = (d <= threshold) & content
    return {**out, "is_confounder": flags}


def merge_spans(
    flags: Sequence[bool], fields: Sequence[str], steps: Sequence[int],
    starts: Sequence[int], ends: Sequence[int], texts: Sequence[str],
) -> list[dict[str, Any]]:
    """Contiguous confounders (same field and step) as character spans.

    Whitespace-only tokens between two confounders join them: they can never be confounders
    themselves, and splitting "9 birds" at its space would prune half a phrase.
    """
    spans: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for i, flag in enumerate(flags):
        key = (fields[i], steps[i])
        if flag:
            if current is not None and (current["field"], current["step"]) == key:
                current["end"] = int(ends[i])
            else:
                current = {"field": fields[i], "step": int(steps[i]), "start": int(starts[i]), "end": int(ends[i])}
                spans.append(current)
        elif current is not None and not (texts[i].strip() == "" and key == (current["field"], current["step"])):
            current = None
    return spans


def _planted(row: dict[str, Any], fields: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> list[bool]:
    planted = [tuple(s) for s in row.get("distractor_spans") or []]
    return [
        f == INSTRUCTION and any(a < e and b > s for a, b in planted)
        for f, s, e in zip(fields, starts, ends)
    ]


def detect(
    teacher_scores: pd.DataFrame, student_scores: pd.DataFrame, corpus: Sequence[dict[str, Any]],
    spec: DetectSpec,
) -> pd.DataFrame:
    """Compare teacher and student token scores sample by sample (docs/data-schemas.md)."""
    teacher_by_id = teacher_scores.set_index("id")
    corpus_by_id = {str(r["id"]): r for r in corpus}
    records = []
    for s in student_scores.itertuples(index=False):
        if s.id not in teacher_by_id.index:
            raise ValueError(f"sample {s.id!r} was scored for the student but not for the teacher")
        t = teacher_by_id.loc[s.id]
        if list(t["char_start"]) != list(s.char_start) or list(t["field"]) != list(s.field):
            raise ValueError(
                f"sample {s.id!r}: teacher and student tokenise differently; this version needs "
                "teacher and student to share a tokenizer"
            )
        fields, steps, texts = list(s.field), list(s.step), list(s.text)
        res = detect_sample(np.asarray(t["grad_norm"]), np.asarray(s.grad_norm), fields, steps, texts, spec)
        spans = merge_spans(res["is_confounder"], fields, steps, list(s.char_start), list(s.char_end), texts)
        records.append({
            "id": s.id, "field": fields, "step": steps, "char_start": list(s.char_start),
            "char_end": list(s.char_end), "text": texts,
            **{k: res[k].tolist() for k in ("teacher_norm", "student_norm", "diff", "is_confounder")},
            "is_planted": _planted(corpus_by_id.get(s.id, {}), fields, s.char_start, s.char_end),
            "spans": json.dumps(spans),
        })
    return pd.DataFrame.from_records(records)


def detection_metrics(tokens: pd.DataFrame, spec: DetectSpec) -> dict[str, Any]:
    """Token-level precision/recall of instruction confounders against planted distractors.

    Whitespace-only tokens are left out: they are never confounders by rule, so counting them
    as planted would charge recall for tokens no setting could find. `base_rate` is the
    precision a random choice of tokens would get. `mean_scores` (normalised teacher, student
    and difference scores, averaged over planted and over other tokens) says why detection
    works or fails: it needs planted tokens to have a clearly lower difference.
    """
    conf = planted = hit = total = 0
    sums = {group: {"teacher": 0.0, "student": 0.0, "diff": 0.0, "n": 0} for group in ("planted", "other")}
    for r in tokens.itertuples(index=False):
        rows = zip(r.field, r.text, r.is_confounder, r.is_planted, r.teacher_norm, r.student_norm, r.diff)
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
        "precision": precision, "recall": recall, "f1": f1,
        "base_rate": planted / total if total else 0.0,
        "n_samples": len(tokens), "n_tokens": total, "n_confounders": conf, "n_planted": planted,
        "mean_scores": mean_scores,
        "settings": asdict(spec),
    }
