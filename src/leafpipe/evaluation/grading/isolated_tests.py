"""Run a program and its tests in two sandboxed processes: tests the program cannot reach.

When a solution and its tests share one process, the solution can make wrong answers pass: return
an object whose `__eq__` is always true, replace a builtin the tests use, install a trace function
that skips the test call, or read the tests' expected values or the end marker from its own
source. Here the program runs alone (`call_channel.serve_program`), the tests run in another
sandbox (`call_channel.run_tests`), and the two talk only through a socket pair set up here, over
which plain values cross. The tests arrive on their process's stdin, so they are in no file and
in no argument the program could read; "completed" is the tests process's own exit status and
marker line on its stdout, which the program cannot write to.

Both processes get the same `Limits`; they run side by side, so a sample costs two sandbox
starts (docs/grading.md has the measured cost).
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from leafpipe.evaluation.grading import call_channel
from leafpipe.evaluation.grading.sandbox import Limits, RunResult, run_python

# Both programs start with the channel's code; each then calls its end.
CHANNEL_SOURCE = Path(call_channel.__file__).read_text(encoding="utf-8")


@dataclass(frozen=True)
class IsolatedRun:
    """Both processes' results; `completed`: the tests exited 0 after writing their marker."""

    program: RunResult
    tests: RunResult
    completed: bool

    @property
    def needs_shared_state(self) -> bool:
        """The tests tried to pass the program an object: they need the same-process mode."""
        return self.tests.returncode == call_channel.SHARED_STATE_EXIT


def run_isolated(
    solution: str,
    test: str,
    limits: Limits,
    *,
    prelude: str = "",
    tests_prelude: str | None = None,
) -> IsolatedRun:
    """Run `prelude` + `solution` in one sandbox and `tests_prelude` (default: `prelude`) +
    `test` in another, the tests calling the program's top-level functions and classes."""
    marker = f"leafpipe-tests-completed-{secrets.token_hex(8)}"
    job = {
        "prelude": prelude if tests_prelude is None else tests_prelude,
        "test": test,
        "marker": marker,
    }
    program, tests = run_beside(
        solution,
        lambda fd: (f"{CHANNEL_SOURCE}\nrun_tests({fd})\n", json.dumps(job)),
        limits,
        prelude=prelude,
    )
    return IsolatedRun(program, tests, tests.ok and marker in tests.stdout)


def run_beside(
    solution: str,
    tests: Callable[[int], tuple[str, str]],
    limits: Limits,
    *,
    prelude: str = "",
) -> tuple[RunResult, RunResult]:
    """The program's and the tests' results: `prelude` + `solution` served in one sandbox, and in
    another the program and stdin that `tests` makes for the channel's descriptor number (its
    code starts with `CHANNEL_SOURCE`, or execs it, and calls the program through `_Remote`)."""
    program_end, tests_end = socket.socketpair()
    program_fd, tests_fd = program_end.detach(), tests_end.detach()
    program_source = (
        f"{CHANNEL_SOURCE}\nexit_when_tests_end({program_fd})\n"
        f"serve_program({program_fd}, {solution!r}, {prelude!r})\n"
    )
    tests_source, tests_stdin = tests(tests_fd)
    with ThreadPoolExecutor(max_workers=1) as pool:
        program = pool.submit(run_python, program_source, limits=limits, pass_fds=(program_fd,))
        finished = run_python(tests_source, stdin=tests_stdin, limits=limits, pass_fds=(tests_fd,))
        return program.result(), finished
