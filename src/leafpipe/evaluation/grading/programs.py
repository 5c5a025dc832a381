"""Check generated programs against code benchmarks' tests, each run in the sandbox.

Three test styles: HumanEval (a `check(candidate)` function), a self-contained test script of
asserts (LeetCode-style problems), and stdin/stdout cases (LiveCodeBench). Plus `pass_at_k`,
the unbiased estimator of Chen et al. 2021. (HumanEval+'s inputs checked against a reference
solution are `differential`'s.)

Tests run in one of two modes (`CODE_TEST_MODES`, docs/grading.md "Where tests run"). Isolated
(the default): the program and its tests in two sandboxes joined by `call_channel`, so nothing
the program does reaches the tests' process (`isolated_tests`). Same-process: one program, and a
sample "passes" only if it exits 0 *and* reaches its end: the checker appends a line that prints
a random marker, so a solution that calls `sys.exit(0)` or `os._exit(0)` before or during the
tests does not pass by accident. (A program that reads its own source could print the marker;
this mode guards against accidents, not adversaries.)

The solution part runs with `__name__` set to "__solution__" (compiled on its own, so its
`from __future__` imports still work), as in the reference harnesses, which exec the code: its
`if __name__ == "__main__":` block, often a demo reading stdin, does not run. The test part runs
as `__main__`. Stdio programs run as they are, main block included.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from leafpipe.evaluation.grading import (
    call_channel,
    leetcode_contest_runner,
    livecodebench_calls,
    livecodebench_runner,
)
from leafpipe.evaluation.grading.isolated_tests import IsolatedRun, run_isolated
from leafpipe.evaluation.grading.livecodebench_runner import lines_match, output_lines
from leafpipe.evaluation.grading.sandbox import Limits, RunResult, run_python

# Language tags of fenced blocks taken as Python.
_PYTHON_TAGS = {"python", "py", "python3"}
# Longest Verdict.detail and the stderr lines quoted in it (a traceback's last lines say why).
_MAX_DETAIL = 500
_STDERR_LINES = 5
_EXCERPT = 80
# How a program and its tests run (`evaluation.code_tests`, docs/grading.md): in two processes
# joined by `call_channel`, or in one, for tests that share objects with the program.
CODE_TEST_MODES = ("isolated", "same_process")
# Starts the detail of an isolated check whose tests pass the program objects (a ListNode they
# built), so it ran again in one process; the tests, not the program, decide that.
SHARED_FALLBACK = "same_process: the tests pass the program objects"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check. `status`: "passed", "wrong_answer" (stdio output differs), or the
    sandbox's "failed" / "timeout" / "error"; `detail` (at most 500 characters) says why not."""

    passed: bool
    status: str
    detail: str = ""


def extract_code(completion: str) -> str:
    """The program in a model completion.

    Rules: among fenced blocks (``` lines, possibly indented), those tagged python/py/python3
    are preferred, else untagged ones; blocks in other languages are ignored. Of the candidates
    the longest wins (an answer usually has the solution as its biggest block and usage examples
    as smaller ones), the last one on ties (the final revision). A final block left open (the
    completion was cut off) counts up to the end. As in Markdown, a fence indented by N spaces
    (inside a list item) has up to N spaces removed from each line of its block. Without any
    candidate block the whole completion is the program.
    """
    blocks: list[tuple[str, str]] = []  # (language tag, code)
    lang: str | None = None  # the open block's tag, None outside blocks
    body: list[str] = []
    indent = 0
    for line in completion.splitlines():
        fence = line.strip()
        if not fence.startswith("```"):
            if lang is not None:
                body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
        elif lang is None:
            words = fence[3:].split()
            lang, body = (words[0].lower() if words else ""), []
            indent = len(line) - len(line.lstrip(" "))
        else:
            blocks.append((lang, "\n".join(body)))
            lang = None
    if lang is not None:
        blocks.append((lang, "\n".join(body)))
    tagged = [code for tag, code in blocks if tag in _PYTHON_TAGS]
    untagged = [code for tag, code in blocks if tag == ""]
    candidates = tagged or untagged
    if not candidates:
        return completion
    return max(reversed(candidates), key=len) + "\n"


def check_code(
    code: Mapping[str, Any],
    completion: str,
    limits: Limits = Limits(),
    *,
    official_runner: str = "",
    message: str = "",
    mode: str = "isolated",
) -> Verdict:
    """A completion against a code row's tests (`rows.CodeSpec`), by the row's kind; `mode`:
    how tests run (`CODE_TEST_MODES`), except stdio cases, compared here in any mode.

    Script and stdio rows run the row's `prompt` first (the imports and classes a judge defines
    before every answer). `official_runner` names the benchmark kind whose own runner's rules
    apply (docs/grading.md), for the rows of that kind's entries:

    - "livecodebench": the code between the answer's last two fence lines, run after the
      runner's `IMPORTS` (`livecodebench_runner`); a functional (script) row's method is called
      once per case, each call within `limits.wall_s` (`livecodebench_calls`).
    - "leetcode_contest": the code as DeepSeek-Coder's evaluator reads it
      (`leetcode_contest_runner`; `message`, the row's user turn, holds the stub an answer
      continuing the method body is appended to).
    - anything else: leafpipe's own reading (`extract_code`).
    """
    if code["kind"] == "humaneval":
        return check_humaneval(
            code["prompt"], completion, code["test"], code["entry_point"], limits, mode=mode
        )
    if official_runner == "livecodebench":
        return _check_livecodebench(code, completion, limits, mode)
    if official_runner == "leetcode_contest":
        program = leetcode_contest_runner.extract_code(completion, message)
    else:
        program = extract_code(completion)
    if code["kind"] == "script":
        return check_script(program, code["test"], limits, prelude=code["prompt"], mode=mode)
    return check_stdio(program, _cases(code), limits, prelude=code["prompt"])


def _check_livecodebench(
    code: Mapping[str, Any], completion: str, limits: Limits, mode: str
) -> Verdict:
    """A livecodebench row as lcb_runner checks it: stdio cases each within `limits`, a
    functional row's calls each within `limits.wall_s` and the answer within the runner's
    global timeout; a call past its limit is a "timeout", a result that differs a
    "wrong_answer". Isolated, the call timer runs in the tests' process: it times the program's
    top-level code (the tests wait for its exports) and each call there."""
    program = livecodebench_runner.extract_code(completion)
    if code["kind"] == "stdio":
        return check_stdio(program, _cases(code), limits, prelude=livecodebench_runner.IMPORTS)
    call_s = limits.wall_s
    answer_s = livecodebench_calls.answer_limit_s(call_s, len(code["cases"]))
    timed = livecodebench_calls.timed_prelude(livecodebench_runner.IMPORTS, call_s)
    verdict = _check_tests(
        program,
        livecodebench_calls.calls_test(code["cases"], code["entry_point"], call_s),
        dataclasses.replace(limits, wall_s=answer_s, cpu_s=answer_s),
        livecodebench_runner.IMPORTS if mode == "isolated" else timed,
        mode=mode,
        tests_prelude=timed,
    )
    if verdict.passed or verdict.status != "failed":
        return verdict
    error_line = verdict.detail.rsplit("\n", 1)[-1]
    return dataclasses.replace(verdict, status=livecodebench_calls.failure_status(error_line))


def _cases(code: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(given, expected) for given, expected in code["cases"]]


def humaneval_solution(prompt: str, completion: str, entry_point: str) -> str:
    """The solution module of a HumanEval-style answer: the prompt, completed.

    A completion normally continues the prompt's function body. One that defines
    `entry_point` itself at top level replaces the prompt's stub: the prompt (signature plus
    docstring, a valid function) still goes first, so its imports and helper functions, which
    some problems' solutions call, stay defined. A completion holding a fenced code block (never
    valid Python as a continuation) is reduced to that block with `extract_code` first.
    """
    if re.search(r"^[ \t]*```", completion, re.M):
        completion = extract_code(completion)
    if re.search(rf"^(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", completion, re.M):
        return prompt + "\n" + completion
    return prompt + completion


def check_humaneval(
    prompt: str,
    completion: str,
    test: str,
    entry_point: str,
    limits: Limits = Limits(),
    *,
    mode: str = "isolated",
) -> Verdict:
    """HumanEval: the completed function (`humaneval_solution`), then `test` (defining `check`),
    then `check(entry_point)`, within `limits`; `mode`: where the tests run (`CODE_TEST_MODES`)."""
    solution = humaneval_solution(prompt, completion, entry_point)
    return _check_tests(solution, f"{test}\n\ncheck({entry_point})\n", limits, mode=mode)


def check_script(
    solution: str,
    test: str,
    limits: Limits = Limits(),
    *,
    prelude: str = "",
    mode: str = "isolated",
) -> Verdict:
    """`solution`, then `test`, a self-contained script of asserts; passes when it runs to its end.

    `prelude` (imports or classes a judge defines before every answer) runs first, in the same
    namespace, compiled on its own so that the solution's `from __future__` lines stay legal.
    The test script must not exit by itself (no `sys.exit`, no `unittest.main()`): that would
    look like a solution exiting before the tests. `mode`: where the tests run
    (`CODE_TEST_MODES`); isolated, `prelude` runs in both processes.
    """
    return _check_tests(solution, test, limits, prelude, mode=mode)


def check_stdio(
    program: str,
    cases: Sequence[tuple[str, str]],
    limits: Limits = Limits(),
    *,
    prelude: str = "",
) -> Verdict:
    """Run `program` once per (stdin, expected stdout) case, in order, until the first failure.

    Outputs are compared as LiveCodeBench's runner compares them (`livecodebench_runner`): the
    same number of lines, each stripped of surrounding whitespace (blank lines around the whole
    output do not count), equal as text or as whitespace-separated Decimal numbers, so "1.0"
    matches "1" but "a  b" does not match "a b". `prelude` runs first, as in `check_script`.
    """
    if not cases:
        raise ValueError("check_stdio needs at least one case")
    if prelude:
        program = _with_prelude(prelude, program, "main.py")
    for i, (given, expected) in enumerate(cases, 1):
        result = run_python(program, stdin=given, limits=limits)
        where = f"case {i}/{len(cases)}"
        if not result.ok:
            return failure_verdict(result, where)
        got, want = output_lines(result.stdout), output_lines(expected)
        line = next(
            (j for j, (a, b) in enumerate(zip(got, want)) if not lines_match(a, b)),
            min(len(got), len(want)),
        )
        if line < max(len(got), len(want)):
            seen = got[line] if line < len(got) else "<end of output>"
            wanted = want[line] if line < len(want) else "<end of output>"
            return Verdict(
                False,
                "wrong_answer",
                _bounded(
                    f"{where}, line {line + 1}: expected {wanted[:_EXCERPT]!r}, "
                    f"got {seen[:_EXCERPT]!r}"
                ),
            )
    return Verdict(True, "passed")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from `n` samples of which `c` passed: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms the huge binomials.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if n - c < k:  # every choice of k samples holds a passing one
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """pass@k averaged over problems, each given as (samples n, passing c)."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        raise ValueError("no problems to average over")
    return sum(values) / len(values)


def _check_tests(
    solution: str,
    test: str,
    limits: Limits,
    prelude: str = "",
    *,
    mode: str = "isolated",
    tests_prelude: str | None = None,
) -> Verdict:
    """Run `prelude` and `solution` (as "__solution__"), then `test` (as "__main__"): in two
    processes (`isolated_tests`), or in one followed by the end marker ("same_process").
    `tests_prelude`: what the tests process runs first instead of `prelude` (isolated only)."""
    if mode == "isolated":
        run = run_isolated(solution, test, limits, prelude=prelude, tests_prelude=tests_prelude)
        if not run.needs_shared_state:
            return _isolated_verdict(run)
        shared = prelude if tests_prelude is None else tests_prelude  # the judge's, timer included
        verdict = _check_tests(solution, test, limits, shared, mode="same_process")
        detail = f"{SHARED_FALLBACK}: {verdict.detail}" if verdict.detail else SHARED_FALLBACK
        return dataclasses.replace(verdict, detail=_bounded(detail))
    if mode != "same_process":
        raise ValueError(f"mode must be one of {list(CODE_TEST_MODES)}, got {mode!r}")
    marker = f"leafpipe-tests-completed-{secrets.token_hex(8)}"
    program = (
        f"__name__ = '__solution__'\n"
        f"{_with_prelude(prelude, solution, 'solution.py')}"
        f"__name__ = '__main__'\n"
        f"{test}\n"
        # os.write: immune to the solution rebinding print or sys.stdout.
        f"\n__import__('os').write(1, b'\\n{marker}\\n')\n"
    )
    result = run_python(program, limits=limits)
    if not result.ok:
        return failure_verdict(result, "")
    if marker not in result.stdout:
        return Verdict(False, "failed", "the program exited with code 0 before the tests completed")
    return Verdict(True, "passed")


def _isolated_verdict(run: IsolatedRun) -> Verdict:
    """Passed when the tests completed. Otherwise the program's own failure where the tests
    only saw it vanish or fail before they began (its timeout or traceback says why), else
    the tests' failure."""
    if run.completed:
        return Verdict(True, "passed")
    if run.tests.returncode == call_channel.PROGRAM_FAILED_EXIT and not run.program.ok:
        return failure_verdict(run.program, "the program")
    if not run.tests.ok:
        return failure_verdict(run.tests, "")
    return Verdict(False, "failed", "the tests exited with code 0 before they completed")


def _with_prelude(prelude: str, code: str, name: str) -> str:
    """Statements that run `prelude`, then `code`, each compiled on its own, in one namespace."""
    run_prelude = f"exec(compile({prelude!r}, 'prelude.py', 'exec'))\n" if prelude else ""
    return f"{run_prelude}exec(compile({code!r}, {name!r}, 'exec'))\n"


def failure_verdict(result: RunResult, where: str) -> Verdict:
    """A Verdict for a run that did not end well: the sandbox's reason and stderr's last lines."""
    # Each line cut short, so a long source line quoted in a traceback cannot crowd out its error.
    tail = "\n".join(
        _excerpt(line) for line in result.stderr.rstrip().splitlines()[-_STDERR_LINES:]
    )
    parts = [p for p in (where, result.message, tail) if p]
    return Verdict(False, result.status, _bounded(": ".join(parts)))


def _excerpt(line: str) -> str:
    return line if len(line) <= _EXCERPT else line[: _EXCERPT - 3] + "..."


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."
