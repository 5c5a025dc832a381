"""Stage 1b: confounding tokens are those the student leans on and the teacher does not.

Per sample and per scope (the instruction; at response level also the earlier response: the
earlier segment, or every reasoning step but the last), each model's gradient norms are min-max
normalised, d = teacher − student is min-max normalised again, and tokens at or below the p-th
percentile of d (threshold capped) are confounders. Other combinations of the two models'
scores are options (`score`, leafpipe.detect.score_variants). Scopes are normalised separately
because response tokens carry systematically larger gradients (they sit next to the tokens being
predicted) and would otherwise crowd out the instruction.

`rules` picks the authors' public code ("paper", the default) or leafpipe's own refinements
("leafpipe") for four behaviours, each of which can also be set on its own
(`leafpipe.detect.rules.resolved_rules`): the percentile (the code's index into the sorted d, or
interpolation), whether whitespace tokens join two confounder runs into one span
(leafpipe.detect.spans), whether counterfactuals widen spans to whole words
(leafpipe.prune.counterfactuals), and how the response is cut into scopes
(leafpipe.detect.scoring).

Protected text (`protect`, e.g. a fixed "reason step by step" instruction) is never scored or
pruned: its tokens leave the instruction scope before normalisation, so they never shift the
other tokens' scores. The official Llama script drops the user turn's last 15 tokens for the
same reason; naming the text works for any template and tokenizer.

A scope is left undetected, with no confounders, when min-max is undefined there: fewer than two
of its tokens have finite scores in both models (a sample the scorer left unscored, see
leafpipe.detect.scoring), or one model's scores, or their difference, are all equal. Flagging the
lowest percentile of a constant would flag every token. Each such scope is recorded with its
reason (`UNDETECTABLE_REASONS`) and counted in the metrics (leafpipe.detect.metrics).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leafpipe.detect.metrics import (
    ALL_EQUAL,
    EQUAL_DIFFERENCE,
    NON_FINITE,
    SCOPES,
    unscored_counts,
)
from leafpipe.detect.metrics import detection_metrics as detection_metrics
from leafpipe.detect.rules import RULES, resolved_rules
from leafpipe.detect.score_variants import RAW_INPUT, SCORES, normalised_difference
from leafpipe.detect.spans import (
    confounder_spans,
    in_instruction_spans,
    protected_spans,
    spans_json,
)
from leafpipe.detect.token_kinds import token_kinds
from leafpipe.text.templates import INSTRUCTION, RESPONSE

log = logging.getLogger(__name__)

# detection_metrics is re-exported (`as`): the detection stage, the validity check and the quality
# sweep import it from here, with the spec it reports.

STRATEGIES = ("percentile", "top_k", "absolute")

PERCENTILE_RULES = ("index", "interpolate")
# The scorer columns detection carries into tokens.parquet, aligned onto the student's tokens:
# column -> suffix of `teacher_*` and `student_*`.
RAW_COLUMNS = {"grad_norm": "raw", "grad_x_input": "gxi"}


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
    rules: str = "paper"  # "paper" or "leafpipe": the defaults of the two settings below
    percentile_rule: str | None = None  # "index" or "interpolate"; None: from rules
    join_whitespace: bool | None = (
        None  # whitespace tokens join two runs into one span; None: from rules
    )
    protect: tuple[str, ...] = ()  # text never scored or pruned
    score: str = "paper"  # how the two models' scores combine (leafpipe.detect.score_variants)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown detection strategy {self.strategy!r}; choose one of {STRATEGIES}"
            )
        if self.rules not in RULES:
            raise ValueError(
                f"unknown detection rules {self.rules!r}; choose one of {tuple(RULES)}"
            )
        if self.score not in SCORES:
            raise ValueError(f"unknown detection score {self.score!r}; choose one of {SCORES}")
        # Frozen: resolve in place, so that a spec built from config (None: from rules) and one
        # built by `replace` hold the same concrete values.
        resolved = resolved_rules(
            {
                "rules": self.rules,
                "percentile_rule": self.percentile_rule,
                "join_whitespace": self.join_whitespace,
            }
        )
        object.__setattr__(self, "percentile_rule", resolved["percentile_rule"])
        object.__setattr__(self, "join_whitespace", resolved["join_whitespace"])
        object.__setattr__(self, "protect", tuple(self.protect))
        if self.percentile_rule not in PERCENTILE_RULES:
            raise ValueError(
                f"unknown percentile rule {self.percentile_rule!r}; "
                f"choose one of {PERCENTILE_RULES}"
            )


def _scopes(
    fields: Sequence[str], steps: Sequence[int], response_level: bool
) -> list[tuple[str, np.ndarray]]:
    """(name, token indices) of each scope with at least two tokens (one token ranks nothing)."""
    fields_a, steps_a = np.asarray(fields), np.asarray(steps)
    scopes = [(SCOPES[0], np.flatnonzero(fields_a == INSTRUCTION))]
    if response_level:
        resp = fields_a == RESPONSE
        last = steps_a[resp].max(initial=-1)
        scopes.append((SCOPES[1], np.flatnonzero(resp & (steps_a < last))))
    return [(name, s) for name, s in scopes if s.size > 1]


def detect_sample(
    teacher: np.ndarray,
    student: np.ndarray,
    fields: Sequence[str],
    steps: Sequence[int],
    texts: Sequence[str],
    spec: DetectSpec,
    protected: np.ndarray | None = None,
) -> dict[str, Any]:
    """Normalised scores, diff and confounder flags for one sample's tokens, and `unscored`:
    {scope name: reason} for each scope left undetected (module docstring).

    Args:
        teacher: [n] raw teacher scores (the column `RAW_INPUT[spec.score]`) on these tokens.
        student: [n] raw student scores, same column.
        fields, steps, texts: [n] each token's part, response scope index and text.
        spec: the detection settings.
        protected: [n] bool, tokens of protected text; None: none.

    Returns:
        `teacher_norm`, `student_norm`, `diff` ([n] floats), `is_confounder` ([n] bool) and
        `unscored`. Scores are NaN outside the scopes, on protected tokens and on tokens without
        a score in either model (a student token that no teacher token covers, the last
        response scope): those are never confounders.
    """
    n = len(texts)
    out = {k: np.full(n, np.nan) for k in ("teacher_norm", "student_norm", "diff")}
    flags = np.zeros(n, dtype=bool)
    unscored: dict[str, str] = {}
    eligible = np.isfinite(teacher) & np.isfinite(student)
    if protected is not None:
        eligible &= ~protected
    for name, idx in _scopes(fields, steps, spec.response_level):
        idx = idx[eligible[idx]]
        if idx.size < 2:
            unscored[name] = NON_FINITE
            continue
        norm = normalised_difference(teacher[idx], student[idx], spec.score)
        if norm.teacher is None or norm.student is None:
            unscored[name] = ALL_EQUAL
            continue
        out["teacher_norm"][idx], out["student_norm"][idx] = norm.teacher, norm.student
        if norm.diff is None:
            unscored[name] = EQUAL_DIFFERENCE
            continue
        out["diff"][idx] = norm.diff
        content = np.array([bool(texts[i].strip()) for i in idx])
        flags[idx] = threshold_flags(norm.diff, content, spec)
    return {**out, "is_confounder": flags, "unscored": unscored}


def percentile_threshold(diff: np.ndarray, percentile: float, rule: str) -> float:
    """The `percentile`-th percentile of one scope's d [n].

    "index" is the authors' rule, the value at index int(n · p / 100) of the sorted d (RUCBM/LeaF
    src/Confounding_token_detection/remove_confounding_tokens_math.py), the largest value at
    p = 100; "interpolate" is numpy's linear interpolation between neighbouring values.
    """
    if rule == "index":
        return float(np.sort(diff)[min(int(len(diff) * (percentile / 100)), len(diff) - 1)])
    return float(np.percentile(diff, percentile))


def threshold_flags(diff: np.ndarray, content: np.ndarray, spec: DetectSpec) -> np.ndarray:
    """Confounder flags for one scope's normalised differences; whitespace tokens never qualify."""
    if spec.strategy == "percentile":
        threshold = percentile_threshold(diff, spec.percentile, spec.percentile_rule)
        return (diff <= min(threshold, spec.cap)) & content
    if spec.strategy == "absolute":
        return (diff <= spec.threshold) & content
    candidates = np.flatnonzero(content)
    lowest = candidates[np.argsort(diff[candidates], kind="stable")[: spec.top_k]]
    flags = np.zeros(diff.shape, dtype=bool)
    flags[lowest] = True
    return flags


def _kinds(
    row: dict[str, Any],
    fields: Sequence[str],
    texts: Sequence[str],
    starts: Sequence[int],
    ends: Sequence[int],
    protected: Sequence[tuple[int, int]],
) -> list[str]:
    """leafpipe.detect.token_kinds for instruction tokens, against the row's planted spans when the
    corpus has that key (the world); "response" for response tokens."""
    instr = [i for i, f in enumerate(fields) if f == INSTRUCTION]
    planted = row["distractor_spans"] if "distractor_spans" in row else None
    found = token_kinds(
        [texts[i] for i in instr],
        [starts[i] for i in instr],
        [ends[i] for i in instr],
        planted,
        protected,
    )
    kinds = ["response"] * len(fields)
    for i, kind in zip(instr, found):
        kinds[i] = kind
    return kinds


def _column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A scorer column as floats; NaN throughout in a frame scored before it existed."""
    return (
        frame[column].to_numpy(dtype=float)
        if column in frame.columns
        else np.full(len(frame), np.nan)
    )


def _aligned_teacher(
    teacher: pd.DataFrame, student: pd.DataFrame, column: str, reduce: str
) -> np.ndarray:
    """Teacher scores (`column`) on the student's tokens: position-wise when both tokenise alike,
    else by characters of each part (leafpipe.text.alignment)."""
    t_parts, s_parts = teacher["part"].to_numpy(), student["part"].to_numpy()
    values = _column(teacher, column)
    if (
        len(teacher) == len(student)
        and (t_parts == s_parts).all()
        and (teacher["char_start"].to_numpy() == student["char_start"].to_numpy()).all()
    ):
        return values
    from leafpipe.text.alignment import align_scores

    out = np.full(len(student), np.nan)
    for part in (INSTRUCTION, RESPONSE):
        t, s = t_parts == part, s_parts == part
        out[s] = align_scores(
            teacher["char_start"].to_numpy()[t],
            teacher["char_end"].to_numpy()[t],
            values[t],
            student["char_start"].to_numpy()[s],
            student["char_end"].to_numpy()[s],
            reduce=reduce,
        )
    return out


def _sample_record(
    sample_id: str,
    teacher: pd.DataFrame,
    student: pd.DataFrame,
    row: dict[str, Any],
    spec: DetectSpec,
) -> dict[str, Any]:
    """One sample's row of tokens.parquet from its teacher and student scores (long schema)."""
    fields, steps, texts = (
        student["part"].tolist(),
        student["step"].tolist(),
        student["token"].tolist(),
    )
    starts, ends = student["char_start"].tolist(), student["char_end"].tolist()
    raw = {
        column: (
            _aligned_teacher(teacher, student, column, spec.align_reduce),
            _column(student, column),
        )
        for column in {*RAW_COLUMNS, RAW_INPUT[spec.score]}
    }
    protect_spans = protected_spans(row.get("instruction", ""), spec.protect)
    protected = in_instruction_spans(protect_spans, fields, starts, ends)
    res = detect_sample(
        *raw[RAW_INPUT[spec.score]], fields, steps, texts, spec, np.array(protected, dtype=bool)
    )
    spans = confounder_spans(res["is_confounder"], fields, steps, starts, ends, texts, spec)
    return {
        "id": sample_id,
        "field": fields,
        "step": steps,
        "char_start": starts,
        "char_end": ends,
        "text": texts,
        **{k: res[k].tolist() for k in ("teacher_norm", "student_norm", "diff", "is_confounder")},
        **{
            f"{model}_{suffix}": raw[column][m].tolist()
            for column, suffix in RAW_COLUMNS.items()
            for m, model in enumerate(("teacher", "student"))
        },
        "kind": _kinds(row, fields, texts, starts, ends, protect_spans),
        "protected": protected,
        "is_planted": in_instruction_spans(row.get("distractor_spans") or [], fields, starts, ends),
        "spans": spans_json(spans),
        "unscored": json.dumps(res["unscored"]),
    }


def detect(
    teacher_scores: pd.DataFrame,
    student_scores: pd.DataFrame,
    corpus: Sequence[dict[str, Any]],
    spec: DetectSpec,
    domain_specs: dict[str, DetectSpec] | None = None,
) -> pd.DataFrame:
    """Compare teacher and student token scores sample by sample, on the student's tokens.

    `domain_specs` overrides `spec` for corpus rows whose `domain` field names one
    (schemas: docs/data-schemas.md).
    """
    for needed in {RAW_INPUT[s.score] for s in (spec, *(domain_specs or {}).values())}:
        if needed not in teacher_scores.columns or needed not in student_scores.columns:
            raise ValueError(
                f"detection score needs the scorer column {needed!r}, missing from the scores "
                "(written before it existed: run the score stage again)"
            )
    teacher_by_id = dict(iter(teacher_scores.groupby("sample_id", sort=False)))
    corpus_by_id = {str(r["id"]): r for r in corpus}
    records = []
    for sample_id, s in student_scores.groupby("sample_id", sort=False):
        if sample_id not in teacher_by_id:
            raise ValueError(
                f"sample {sample_id!r} was scored for the student but not for the teacher"
            )
        row = corpus_by_id.get(sample_id, {})
        sample_spec = (domain_specs or {}).get(row.get("domain"), spec)
        records.append(_sample_record(sample_id, teacher_by_id[sample_id], s, row, sample_spec))
    tokens = pd.DataFrame.from_records(records)
    counts = unscored_counts(tokens)
    if any(n for scope in counts.values() for n in scope.values()):
        log.warning(
            "detection: scopes left without confounders (min-max undefined), by reason: %s",
            "; ".join(
                f"{scope}: " + ", ".join(f"{n} {reason}" for reason, n in c.items() if n)
                for scope, c in counts.items()
                if any(c.values())
            ),
        )
    return tokens
