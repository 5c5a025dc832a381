"""The decision table of docs/grading.md, graded by `grade_math` (bench/grading_agreement.py):
the table reads as cases, and the grader agrees with the careful verdicts on all but the rows
docs/grading.md lists as disagreeing."""

from __future__ import annotations

from types import ModuleType

import pytest
from bench_scripts import load_bench_script

# The rows docs/grading.md reports as disagreeing (2026-12-05): a fix or a regression changes
# this set, and the reported figure with it.
KNOWN_DISAGREEMENTS = {
    ("The answer is 60 dollars and 50 cents.", "60.5"),
    ("The answer is 2 hours and 30 minutes.", "2.5"),
}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench_script("grading_agreement")


def test_the_table_reads_as_cases_of_both_verdicts_and_all_groups(bench):
    cases = bench.read_cases()
    groups = {group: [c for c in cases if c.group == group] for group in {c.group for c in cases}}
    assert set(groups) == {"2026-12-01", "2026-12-05", "held out"}
    assert len(cases) - len(groups["2026-12-01"]) >= 60  # the issue asks for 60 new cases
    assert {c.right for c in cases} == {True, False}
    multi_line = next(c for c in cases if c.completion.startswith("Adding them up"))
    assert multi_line.completion == "Adding them up gives 18.\n**Answer: 18**"


def test_a_row_that_does_not_read_as_a_case_is_an_error(bench, tmp_path):
    table = tmp_path / "table.md"
    table.write_text(
        "| completion | gold | careful verdict | why |\n|---|---|---|---|\n"
        "| `\\boxed{1}` | `1` | probably | a verdict that is neither right nor wrong |\n"
    )
    with pytest.raises(ValueError, match="not a decision-table row"):
        bench.read_cases(table)


def test_the_grader_agrees_with_the_careful_verdicts_but_on_the_known_rows(bench):
    cases = bench.read_cases()
    differing = bench.disagreements(cases, bench.grade_cases(cases))
    assert {(case.completion, case.gold) for case, _ in differing} == KNOWN_DISAGREEMENTS
    assert 1 - len(differing) / len(cases) >= 0.98
