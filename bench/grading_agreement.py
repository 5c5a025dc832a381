"""How often `grade_math` agrees with a careful human grader, on the decision table of
docs/grading.md.

Each row of that table is a completion (one code span per line), a gold answer, the verdict a
careful person gives ("right" or "wrong") and why. The rows were written with their verdicts before
the grader was run on them, so the agreement measures the grader, not a selection of cases that
suit it. The test `tests/evaluation/grading/test_grading_agreement.py` runs the same table.

Run: `.venv/bin/python bench/grading_agreement.py` (the agreement and every disagreeing row).
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from pathlib import Path

from leafpipe.evaluation.grading.math_answers import MathVerdict, grade_math

TABLE = Path(__file__).resolve().parents[1] / "docs" / "grading.md"
# The table's header; its rows follow until the first line that is not a row.
_HEADER = "| completion | gold | careful verdict | why |"
_CODE_SPAN = re.compile(r"`([^`]*)`")
_VERDICTS = {"right": True, "wrong": False}
_TAG = re.compile(r"\*\((2026-12-01|held out)\)\*")


@dataclass(frozen=True)
class Case:
    """One row of the decision table: what was written, against what, and a careful verdict."""

    completion: str
    gold: str
    right: bool
    why: str

    @property
    def group(self) -> str:
        """When the row was written, from the tag its `why` starts with: "2026-12-01" (the first
        grader's decisions), "held out" (written after the rules, to test them) or "2026-12-05"."""
        tag = _TAG.match(self.why)
        return tag.group(1) if tag else "2026-12-05"


def read_cases(path: Path = TABLE) -> list[Case]:
    """The rows of the decision table in `path`, in order.

    Cells are split on " | ", so a case must not contain that; a completion's code spans are its
    lines. A row that does not read as a case is an error, not a skipped row.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index(_HEADER) + 2  # past the header and its |---| line
    cases = []
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        completion, gold, verdict, why = (cell.strip() for cell in line[2:-2].split(" | "))
        spans = _CODE_SPAN.findall(completion)
        gold_span = _CODE_SPAN.fullmatch(gold)
        if not spans or gold_span is None or verdict not in _VERDICTS:
            raise ValueError(f"not a decision-table row: {line!r}")
        cases.append(Case("\n".join(spans), gold_span.group(1), _VERDICTS[verdict], why))
    return cases


def grade_cases(cases: list[Case], workers: int = 2) -> list[MathVerdict]:
    """`grade_math`'s verdict on each case, in order."""
    return grade_math([(case.completion, case.gold) for case in cases], workers=workers)


def disagreements(cases: list[Case], verdicts: list[MathVerdict]) -> list[tuple[Case, MathVerdict]]:
    """The cases on which the grader and the careful verdict differ."""
    return [(case, v) for case, v in zip(cases, verdicts, strict=True) if v.correct != case.right]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cases = read_cases()
    start = time.monotonic()
    verdicts = grade_cases(cases, args.workers)
    elapsed = time.monotonic() - start
    differing = disagreements(cases, verdicts)
    print(f"{len(cases)} cases graded in {elapsed:.1f} s with {args.workers} workers")
    for group in ("all", "2026-12-01", "2026-12-05", "held out"):
        rows = [case for case in cases if group in ("all", case.group)]
        agreeing = len(rows) - sum(case in rows for case, _ in differing)
        print(f"agreement ({group}): {agreeing}/{len(rows)} = {100 * agreeing / len(rows):.1f}%")
    for case, verdict in differing:
        careful = "right" if case.right else "wrong"
        print(f"- {case.completion!r} vs {case.gold!r}: careful {careful}, grader {verdict}")


if __name__ == "__main__":
    main()
