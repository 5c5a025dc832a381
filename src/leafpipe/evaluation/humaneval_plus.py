"""HumanEval+ as evalplus builds and grades it: rows from its HumanEvalPlus.jsonl, checked by
differential testing rather than by the file's `test` field.

evalplus's file (github.com/evalplus/humanevalplus_release) holds per problem `task_id`,
`prompt`, `entry_point`, `canonical_solution`, `test` (HumanEval's original `check`), `contract`,
`base_input` (the inputs of HumanEval's own tests), `plus_input` (evalplus's added inputs) and
`atol`. evalplus (`evalplus/evaluate.py`, commit 26d6d00) runs the canonical solution once on
every input to get the expected outputs and their times, then runs each answer on the inputs,
each within its own time limit (`differential.TimeRule`), and reports two scores: base (the
`base_input`s) and plus (an answer passes when it passes the base inputs *and* the plus ones).

A benchmark entry's `tests` picks the score: `plus` (the default) or `base`, so that a config can
list HumanEval (base) and HumanEval+ on the same file as two columns. A plus entry's graded
generations also say whether each passed the base inputs (`base_correct`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from leafpipe.evaluation.converters import humaneval_row
from leafpipe.evaluation.grading.differential import (
    Reference,
    ReferenceFailed,
    TimeRule,
    check_differential,
    run_reference,
)
from leafpipe.evaluation.grading.programs import humaneval_solution
from leafpipe.evaluation.grading.sandbox import parallel_map
from leafpipe.evaluation.rows import BenchmarkRow, InputRow, ReferenceTests

Tests = Literal["base", "plus"]
TESTS: tuple[Tests, ...] = ("base", "plus")
_INPUT_SETS = {"base": ("base_input",), "plus": ("base_input", "plus_input")}


def humaneval_plus_row(row: InputRow) -> BenchmarkRow:
    """A HumanEval row (same id, prompt and instruction as `humaneval_row` gives) carrying
    evalplus's inputs, canonical solution and tolerance as its `reference`."""
    converted = humaneval_row(row)
    canonical = row.get("canonical_solution")
    if not (canonical or "").strip():
        raise row.error("canonical_solution", "is empty: the expected outputs come from it")
    reference: ReferenceTests = {
        "canonical_solution": canonical,
        "base_input": _inputs(row, "base_input"),
        "plus_input": _inputs(row, "plus_input"),
        "atol": float(row.get("atol", (int, float)) or 0),
    }
    assert converted["code"] is not None  # a HumanEval row is a code row
    converted["code"]["reference"] = reference
    return converted


def _inputs(row: InputRow, field: str) -> list[list[Any]]:
    """A list of argument lists (JSON arrays); anything else is an error naming the item."""
    if field not in row.data:
        raise row.error(
            field,
            "is missing: HumanEval+ is graded on evalplus' inputs, which its release file "
            "HumanEvalPlus.jsonl.gz holds (the hub's evalplus/humanevalplus has tests only)",
        )
    value = row.get(field, list) or []
    for number, args in enumerate(value, 1):
        if not isinstance(args, list):
            raise row.error(field, f"item {number} should be a list of arguments")
    return value


def grade_humaneval_plus(
    rows: Mapping[str, Mapping[str, Any]],
    generations: Sequence[Mapping[str, Any]],
    tests: Tests,
    *,
    memory_mb: int,
    workers: int,
    rule: TimeRule = TimeRule(),
    mode: str = "isolated",
) -> list[dict[str, Any]]:
    """One verdict per generation: `correct` on the entry's `tests`, `status` and `detail` of the
    deciding check, and `base_correct`; `mode`: where candidates run (`check_differential`).

    The canonical solution runs once per problem and input set (ReferenceFailed names the
    problem when it does not get through them); the base inputs are checked first and, for a
    plus entry, the plus inputs only after they pass, as evalplus's plus score needs both.
    """
    if tests not in TESTS:
        raise ValueError(f"tests must be one of {list(TESTS)}, got {tests!r}")
    fields = _INPUT_SETS[tests]

    def reference_of(problem: str) -> dict[str, Reference]:
        code = rows[problem]["code"]
        spec = code["reference"]
        solution = code["prompt"] + spec["canonical_solution"]
        try:
            return {
                field: run_reference(
                    solution, code["entry_point"], spec[field], memory_mb=memory_mb
                )
                for field in fields
            }
        except ReferenceFailed as err:
            raise ReferenceFailed(f"{problem}: the canonical solution failed: {err}") from err

    problems = sorted({g["id"] for g in generations})
    found = dict(zip(problems, parallel_map(reference_of, problems, workers=workers)))
    return parallel_map(
        lambda g: _verdict(
            rows[g["id"]]["code"], g["completion"], found[g["id"]], rule, memory_mb, mode
        ),
        generations,
        workers=workers,
    )


def _verdict(
    code: Mapping[str, Any],
    completion: str,
    references: Mapping[str, Reference],
    rule: TimeRule,
    memory_mb: int,
    mode: str,
) -> dict[str, Any]:
    """Check the input sets in order (base, then plus), stopping at the first that fails."""
    solution = humaneval_solution(code["prompt"], completion, code["entry_point"])
    spec = code["reference"]
    passed: dict[str, bool] = {}
    for field, reference in references.items():
        verdict = check_differential(
            solution,
            code["entry_point"],
            spec[field],
            reference,
            atol=spec["atol"],
            rule=rule,
            memory_mb=memory_mb,
            mode=mode,
        )
        passed[field] = verdict.passed
        if not verdict.passed:
            break
    detail = f"{field}: {verdict.detail}" if verdict.detail else ""
    return {
        "correct": verdict.passed,
        "status": verdict.status,
        "detail": detail,
        "base_correct": passed["base_input"],
    }
