"""Stage 1b: confounding tokens are those the student leans on and the teacher does not.

Per sample and per scope (the instruction; at response level also the earlier reasoning steps),
each model's gradient norms are min-max normalised, d = teacher − student is min-max normalised
again, and tokens at or below the p-th percentile of d (threshold capped) are confounders.
Scopes are normalised separately because response tokens carry systematically larger gradients
(they sit next to the tokens being predicted) and would otherwise crowd out the instruction.

A scope is left undetected, with no confounders, when min-max is undefined there: fewer than two
of its tokens have finite scores in both models (a sample the scorer left unscored, see
leafpipe.scoring), or one model's scores, or their difference, are all equal. Flagging the
lowest percentile of a constant would flag every token. Each such scope is recorded with its
reason (`UNSCORED_REASONS`) and counted in the metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from leafpipe.templates import INSTRUCTION, RESPONSE


log = logging.getLogger(__name__)

STRATEGIES = ("percentile", "top_k", "absolute")
# The scopes of a sample, by name, and why one can be left undetected.
SCOPES = ("instruction", "steps")  # the instruction; the earlier reasoning steps
NON_FINITE, ALL_EQUAL, EQUAL_DIFFERENCE = "non_finite", "all_equal", "equal_difference"
UNSCORED_REASONS = (NON_FINITE, ALL_EQUAL, EQUAL_DIFFERENCE)


@dataclass(frozen=True)
class DetectSpec:
    strategy: str = "percentile"  # percentile (the paper's), top_k or absolute
    percentile: float = 10.0  # the paper's code: 10 for code, 5 or 10 for math
    cap: float = 0.5  # the percentile threshold on d never exceeds this
    top_k: int = 5  # top_k: the k lowest-d content tokens of each scope
    threshold: float = 0.1  # absolute: d at or below this
    response_level: bool = True  # also detect in earlier reasoning steps
    min_span_tokens: int = 1  # shorter spans are not pruned
    max_span_tokens: int | None = None  # longer spans are not pruned (they would gut the prompt)
    align_reduce: str = "max"  # teacher and student tokenise differently: a student token's score

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown detection strategy {self.strategy!r}; choose one of {STRATEGIES}")


def minmax(x: np.ndarray) -> np.ndarray | None:
    """Scale to [0, 1]; None when all values are equal (no token stands out, nothing to rank)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 0.0:
        return None
    return (x - lo) / (hi - lo)


def _scopes(fields: Sequence[str], steps: Sequence[int], response_level: bool) -> list[tuple[str, np.ndarray]]:
    """(name, token indices) of each scope with at least two tokens (one token ranks nothing)."""
    fields_a, steps_a = np.asarray(fields), np.asarray(steps)
    scopes = [(SCOPES[0], np.flatnonzero(fields_a == INSTRUCTION))]
    if response_level:
        resp = fields_a == RESPONSE
        last = steps_a[resp].max(initial=-1)
        scopes.append((SCOPES[1], np.flatnonzero(resp & (steps_a < last))))
    return [(name, s) for name, s in scopes if s.size > 1]


def detect_sample(
    teacher: np.ndarray, student: np.ndarray, fields: Sequence[str], steps: Sequence[int],
    texts: Sequence[str], spec: DetectSpec,
) -> dict[str, Any]:
    """Normalised scores, diff and confounder flags for one sample's tokens ([n] arrays), and
    `unscored`: {scope name: reason} for each scope left undetected (module docstring).

    NaN outside the scopes and for tokens without a score in either model (a student token that
    no teacher token covers, the last reasoning step): those are never confounders.
    """
    n = len(texts)
    out = {k: np.full(n, np.nan) for k in ("teacher_norm", "student_norm", "diff")}
    flags = np.zeros(n, dtype=bool)
    unscored: dict[str, str] = {}
    scored = np.isfinite(teacher) & np.isfinite(student)
    for name, idx in _scopes(fields, steps, spec.response_level):
        idx = idx[scored[idx]]
        if idx.size < 2:
            unscored[name] = NON_FINITE
            continue
        t, s = minmax(teacher[idx]), minmax(student[idx])
        if t is None or s is None:
            unscored[name] = ALL_EQUAL
            continue
        d = minmax(t - s)
        out["teacher_norm"][idx], out["student_norm"][idx] = t, s
        if d is None:
            unscored[name] = EQUAL_DIFFERENCE
            continue
        out["diff"][idx] = d
        content = np.array([bool(texts[i].strip()) for i in idx])
        flags[idx] = threshold_flags(d, content, spec)
    return {**out, "is_confounder": flags, "unscored": unscored}


def threshold_flags(diff: np.ndarray, content: np.ndarray, spec: DetectSpec) -> np.ndarray:
    """Confounder flags for one scope's normalised differences; whitespace tokens never qualify."""
    if spec.strategy == "percentile":
        return (diff <= min(float(np.percentile(diff, spec.percentile)), spec.cap)) & content
    if spec.strategy == "absolute":
        return (diff <= spec.threshold) & content
    candidates = np.flatnonzero(content)
    lowest = candidates[np.argsort(diff[candidates], kind="stable")[: spec.top_k]]
    flags = np.zeros(diff.shape, dtype=bool)
    flags[lowest] = True
    return flags


def merge_spans(
    flags: Sequence[bool], fields: Sequence[str], steps: Sequence[int],
    starts: Sequence[int], ends: Sequence[int], texts: Sequence[str],
) -> list[dict[str, Any]]:
    """Contiguous confounders (same field and step) as character spans, with their token indices.

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
                current["tokens"].append(i)
            else:
                current = {"field": fields[i], "step": int(steps[i]), "start": int(starts[i]),
                           "end": int(ends[i]), "tokens": [i]}
                spans.append(current)
        elif current is not None and not (texts[i].strip() == "" and key == (current["field"], current["step"])):
            current = None
    return spans


def limit_span_lengths(spans: list[dict[str, Any]], flags: np.ndarray, spec: DetectSpec) -> list[dict[str, Any]]:
    """Drop spans outside [min_span_tokens, max_span_tokens] confounder tokens, unflagging them."""
    kept = []
    for span in spans:
        n = len(span["tokens"])
        if n < spec.min_span_tokens or (spec.max_span_tokens is not None and n > spec.max_span_tokens):
            flags[span["tokens"]] = False
        else:
            kept.append(span)
    return kept


def _planted(row: dict[str, Any], fields: Sequence[str], starts: Sequence[int], ends: Sequence[int]) -> list[bool]:
    planted = [tuple(s) for s in row.get("distractor_spans") or []]
    return [
        f == INSTRUCTION and any(a < e and b > s for a, b in planted)
        for f, s, e in zip(fields, starts, ends)
    ]


def _aligned_teacher(teacher: pd.DataFrame, student: pd.DataFrame, reduce: str) -> np.ndarray:
    """Teacher scores on the student's tokens: position-wise when both tokenise alike, else by
    characters of each part (leafpipe.alignment)."""
    t_parts, s_parts = teacher["part"].to_numpy(), student["part"].to_numpy()
    if len(teacher) == len(student) and (t_parts == s_parts).all() and (
        teacher["char_start"].to_numpy() == student["char_start"].to_numpy()
    ).all():
        return teacher["grad_norm"].to_numpy(dtype=float)
    from leafpipe.alignment import align_scores

    out = np.full(len(student), np.nan)
    for part in (INSTRUCTION, RESPONSE):
        t, s = t_parts == part, s_parts == part
        if s.any() and t.any():
            out[s] = align_scores(
                teacher["char_start"].to_numpy()[t], teacher["char_end"].to_numpy()[t],
                teacher["grad_norm"].to_numpy(dtype=float)[t],
                student["char_start"].to_numpy()[s], student["char_end"].to_numpy()[s], reduce=reduce,
            )
    return out


def detect(
    teacher_scores: pd.DataFrame, student_scores: pd.DataFrame, corpus: Sequence[dict[str, Any]],
    spec: DetectSpec, domain_specs: dict[str, DetectSpec] | None = None,
) -> pd.DataFrame:
    """Compare teacher and student token scores sample by sample, on the student's tokens.

    `domain_specs` overrides `spec` for corpus rows whose `domain` field names one
    (schemas: docs/data-schemas.md).
    """
    teacher_by_id = dict(iter(teacher_scores.groupby("sample_id", sort=False)))
    corpus_by_id = {str(r["id"]): r for r in corpus}
    records = []
    for sample_id, s in student_scores.groupby("sample_id", sort=False):
        if sample_id not in teacher_by_id:
            raise ValueError(f"sample {sample_id!r} was scored for the student but not for the teacher")
        row = corpus_by_id.get(sample_id, {})
        sample_spec = (domain_specs or {}).get(row.get("domain"), spec)
        fields, steps, texts = s["part"].tolist(), s["step"].tolist(), s["token"].tolist()
        starts, ends = s["char_start"].tolist(), s["char_end"].tolist()
        teacher = _aligned_teacher(teacher_by_id[sample_id], s, sample_spec.align_reduce)
        res = detect_sample(teacher, s["grad_norm"].to_numpy(dtype=float), fields, steps, texts, sample_spec)
        spans = merge_spans(res["is_confounder"], fields, steps, starts, ends, texts)
        spans = limit_span_lengths(spans, res["is_confounder"], sample_spec)
        records.append({
            "id": sample_id, "field": fields, "step": steps, "char_start": starts, "char_end": ends,
            "text": texts,
            **{k: res[k].tolist() for k in ("teacher_norm", "student_norm", "diff", "is_confounder")},
            "is_planted": _planted(row, fields, starts, ends),
            "spans": json.dumps([{k: v for k, v in span.items() if k != "tokens"} for span in spans]),
            "unscored": json.dumps(res["unscored"]),
        })
    tokens = pd.DataFrame.from_records(records)
    counts = unscored_counts(tokens)
    if any(n for scope in counts.values() for n in scope.values()):
        log.warning("detection: scopes left without confounders (min-max undefined), by reason: %s",
                    "; ".join(f"{scope}: " + ", ".join(f"{n} {reason}" for reason, n in c.items() if n)
                              for scope, c in counts.items() if any(c.values())))
    return tokens


def unscored_counts(tokens: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{scope: {reason: samples}} of the scopes detection left undetected, from tokens.parquet's
    `unscored` column (zeros for a frame without it, e.g. one written before it existed)."""
    counts = {scope: dict.fromkeys(UNSCORED_REASONS, 0) for scope in SCOPES}
    column = tokens["unscored"] if "unscored" in tokens.columns else []
    for cell in column:
        for scope, reason in json.loads(cell).items():
            counts[scope][reason] += 1
    return counts


def detection_metrics(tokens: pd.DataFrame, spec: DetectSpec) -> dict[str, Any]:
    """Token-level precision/recall of instruction confounders against planted distractors.

    Whitespace-only tokens are left out: they are never confounders by rule, so counting them
    as planted would charge recall for tokens no setting could find. `base_rate` is the
    precision a random choice of tokens would get. `mean_scores` (normalised teacher, student
    and difference scores, averaged over planted and over other tokens) says why detection
    works or fails: it needs planted tokens to have a clearly lower difference. `unscored`
    counts the samples whose instruction or earlier steps got no detection, by reason
    (`unscored_counts`).
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
        "unscored": unscored_counts(tokens),
        "settings": asdict(spec),
    }
