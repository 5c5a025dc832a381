"""A program and its tests in two sandboxes: the program cannot see the tests, their expected
values or their end; its failures still come back as its own (timeout, traceback)."""

from __future__ import annotations

import secrets

import pytest

from leafpipe.evaluation.grading.isolated_tests import run_isolated
from leafpipe.evaluation.grading.programs import SHARED_FALLBACK, Verdict, check_script
from leafpipe.evaluation.grading.sandbox import Limits
from leafpipe.evaluation.registry import grade_generations

FAST = Limits(wall_s=5.0, cpu_s=5.0)

# Looks for the expected value wherever a program might read it: its own source, arguments,
# stdin, environment, the scratch directories, and every process's command line and
# environment it can see.
SEARCHER = """\
import glob, os, re, sys

_FOUND = re.compile(rb"leafpipe-expected-[0-9a-f]+")


def _scan(path):
    try:
        with open(path, "rb") as fh:
            match = _FOUND.search(fh.read(1 << 20))
    except OSError:
        return None
    return match and match.group().decode()


def _places():
    yield sys.argv[0]
    yield "/proc/self/cmdline"
    yield "/proc/self/environ"
    yield "/proc/self/fd/0"
    for pattern in ("/tmp/**", "/var/tmp/**", "/dev/shm/**", os.getcwd() + "/../**"):
        yield from glob.glob(pattern, recursive=True)
    for pid in glob.glob("/proc/[0-9]*"):
        yield pid + "/cmdline"
        yield pid + "/environ"


_STDIN = sys.stdin.read()


def expected():
    found = _FOUND.search(_STDIN.encode()) or None
    if found:
        return found.group().decode()
    for place in _places():
        if os.path.isfile(place) and (hit := _scan(place)):
            return hit
    return None
"""


def test_the_program_finds_the_tests_expected_value_only_when_it_shares_their_process() -> None:
    token = f"leafpipe-expected-{secrets.token_hex(8)}"
    test = f"assert expected() == {token!r}, expected()\n"
    # Sharing one process, the tests are part of the program's own source.
    assert check_script(SEARCHER, test, FAST, mode="same_process").passed
    verdict = check_script(SEARCHER, test, FAST, mode="isolated")
    assert not verdict.passed and "AssertionError: None" in verdict.detail


def test_tests_that_stop_early_with_status_0_are_not_completed() -> None:
    run = run_isolated("def f():\n    return 1\n", "raise SystemExit(0)\nassert f() == 2\n", FAST)
    assert run.tests.ok and not run.completed
    verdict = check_script("def f():\n    return 1\n", "raise SystemExit(0)\n", FAST)
    assert not verdict.passed and "before they completed" in verdict.detail


def test_the_programs_own_failure_is_the_verdict_when_the_tests_only_saw_it_vanish() -> None:
    run = run_isolated("import os\nos.kill(os.getpid(), 9)\n", "f()\n", FAST)
    assert not run.program.ok and run.program.returncode == -9 and not run.completed
    verdict = check_script("import os\nos.kill(os.getpid(), 9)\n", "f()\n", FAST)
    assert verdict.status == "failed" and verdict.detail.startswith(
        "the program: killed by SIGKILL"
    )


def test_both_processes_run_the_prelude_within_the_limits() -> None:
    """The solution's top level sees the prelude's names; each process gets the caller's limits:
    a program over its memory fails before serving, tests over their output fail."""
    uses_prelude = "Y = X + 1\ndef f():\n    return Y\n"
    assert check_script(uses_prelude, "assert f() == 2\n", FAST, prelude="X = 1\n").passed
    small = Limits(wall_s=5.0, cpu_s=5.0, memory_mb=256, output_bytes=1000)
    solution = "def f():\n    return 1\n"
    hungry = check_script("big = bytearray(512 << 20)\n" + solution, "assert f() == 1\n", small)
    assert hungry.status == "failed" and hungry.detail.startswith("the program: exit code 1")
    assert hungry.detail.endswith("MemoryError")
    chatty = check_script(solution, "print('x' * 5000)\nassert f() == 1\n", small)
    assert chatty == Verdict(False, "failed", "output limit of 1000 bytes exceeded")


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        check_script("", "", FAST, mode="shared")


@pytest.mark.parametrize("mode", ["isolated", "same_process", None])
def test_the_scores_name_where_the_tests_ran(mode: str | None) -> None:
    row = {
        "id": "p",
        "task": "code",
        "instruction": "?",
        "answer": None,
        "code": {"kind": "script", "prompt": "", "test": "assert f() == 1\n"},
    }
    bench = {"kind": "leetcode"} if mode is None else {"kind": "leetcode", "code_tests": mode}
    gens = [{"id": "p", "completion": "```python\ndef f():\n    return 1\n```"}]
    graded, summary = grade_generations([row], gens, bench)
    assert graded[0]["correct"] and summary["code_tests"] == (mode or "isolated")


def test_a_program_still_computing_ends_when_its_tests_do() -> None:
    """A tests process that stops waiting (a call's time limit) ends the program with it, rather
    than leaving it to run to its own wall clock."""
    timed_out = (
        "import signal\n"
        "signal.signal(signal.SIGALRM, lambda *_: exec('raise TimeoutError(\"call\")'))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.5)\n"
        "spin()\n"
    )
    run = run_isolated("def spin():\n    while True:\n        pass\n", timed_out, Limits(wall_s=20))
    assert "TimeoutError: call" in run.tests.stderr and not run.completed
    assert run.program.ok and run.program.wall_s < 10


NODE = (
    "class Node:\n"
    "    def __init__(self, val, next=None):\n"
    "        self.val, self.next = val, next\n"
)
LENGTH_TEST = "assert length(Node(1, Node(2))) == 2\n"


def test_tests_that_pass_objects_run_again_in_one_process_and_say_so() -> None:
    right = "def length(node):\n    return 0 if node is None else 1 + length(node.next)\n"
    verdict = check_script(right, LENGTH_TEST, FAST, prelude=NODE)
    assert verdict == Verdict(True, "passed", SHARED_FALLBACK)
    wrong = check_script("def length(node):\n    return 1\n", LENGTH_TEST, FAST, prelude=NODE)
    assert not wrong.passed and wrong.detail.startswith(SHARED_FALLBACK + ": exit code 1")
    # Plain arguments never fall back.
    assert check_script(right, "assert length(None) == 0\n", FAST, prelude=NODE).detail == ""


def test_the_scores_count_the_samples_that_ran_in_one_process() -> None:
    """Only isolated scores count fallbacks: one of the two samples passes the program a Node."""
    rows = [
        {
            "id": pid,
            "task": "code",
            "instruction": "?",
            "answer": None,
            "code": {"kind": "script", "prompt": NODE, "test": test},
        }
        for pid, test in (("objects", LENGTH_TEST), ("plain", "assert length(None) == 0\n"))
    ]
    right = (
        "```python\ndef length(node):\n    return 0 if node is None else 1 + length(node.next)\n```"
    )
    gens = [{"id": row["id"], "completion": right} for row in rows]
    _, isolated = grade_generations(rows, gens, {"kind": "leetcode"})
    assert isolated["same_process_fallbacks"] == 1
    _, shared = grade_generations(rows, gens, {"kind": "leetcode", "code_tests": "same_process"})
    assert "same_process_fallbacks" not in shared
