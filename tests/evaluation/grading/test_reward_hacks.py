"""Reward hacks against the code checks: the isolated harness fails every one of
`tests/support/reward_hacks.py`'s programs, the same-process harness is graded as observed (what
docs/grading.md's "Reward hacks" table says), and each problem's correct solution passes in both
modes."""

from __future__ import annotations

import pytest
from reward_hacks import HACKS, PROBLEMS, Hack, Problem, wrong_answer

from leafpipe.evaluation.grading.programs import (
    Verdict,
    check_humaneval,
    check_script,
    humaneval_solution,
)
from leafpipe.evaluation.grading.sandbox import Limits

MODES = ("same_process", "isolated")
FAST = Limits(wall_s=10.0, cpu_s=10.0)


def _humaneval(problem: Problem, completion: str, mode: str) -> Verdict:
    return check_humaneval(
        problem.prompt, completion, problem.test, problem.entry_point, FAST, mode=mode
    )


def _script(problem: Problem, completion: str, mode: str) -> Verdict:
    solution = humaneval_solution(problem.prompt, completion, problem.entry_point)
    return check_script(solution, problem.script, FAST, mode=mode)


def _graded(hack: Hack, mode: str) -> list[tuple[str, Verdict]]:
    """The hack's verdict under each test style it applies to."""
    styles = [("humaneval", _humaneval)] + ([("script", _script)] if hack.scripted else [])
    return [(style, check(hack.problem, hack.completion, mode)) for style, check in styles]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.entry_point)
def test_each_problems_correct_solution_passes_in_both_styles(problem: Problem, mode: str) -> None:
    verdicts = [
        _humaneval(problem, problem.solution, mode),
        _script(problem, problem.solution, mode),
    ]
    assert [v.status for v in verdicts] == ["passed", "passed"], verdicts


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.entry_point)
def test_each_problems_plainly_wrong_answer_fails(problem: Problem, mode: str) -> None:
    """The problems' tests can fail at all: an answer returning None does not pass them."""
    wrong = wrong_answer(problem)
    verdicts = [_humaneval(problem, wrong, mode), _script(problem, wrong, mode)]
    assert not any(v.passed for v in verdicts), verdicts


@pytest.mark.parametrize("hack", HACKS, ids=lambda h: h.kind)
def test_the_isolated_harness_fails_every_reward_hack(hack: Hack) -> None:
    graded = _graded(hack, "isolated")
    assert [style for style, v in graded if v.passed] == [], graded


@pytest.mark.parametrize("hack", HACKS, ids=lambda h: h.kind)
def test_the_same_process_harness_grades_each_hack_as_the_docs_table_says(hack: Hack) -> None:
    graded = _graded(hack, "same_process")
    assert [v.passed for _, v in graded] == [hack.same_process_passes] * len(graded), graded
