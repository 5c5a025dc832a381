"""Differential testing as evalplus does it: a candidate function against a reference solution's
outputs on the same inputs, each input within a time limit of its own.

A reference solution is run once per input set (`run_reference`), in the sandbox like any
program; its outputs stay a pickle that only the sandboxed harness (`differential_harness`)
unpickles, and the seconds it took on each input set the candidate's limits (`TimeRule`). Then
each candidate is checked (`check_differential`), stopping at its first failing input.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leafpipe.evaluation.grading import differential_harness
from leafpipe.evaluation.grading.isolated_tests import CHANNEL_SOURCE, run_beside
from leafpipe.evaluation.grading.programs import Verdict, failure_verdict
from leafpipe.evaluation.grading.sandbox import Limits, RunResult, run_python

# The reference solution is trusted data: its run only needs bounds that catch a broken setup.
_REFERENCE_WALL_S = 300.0
# Its outputs come back through stdout (base64 of a pickle): HumanEval+'s largest are a few MB.
_REFERENCE_OUTPUT_BYTES = 256 << 20
_MAX_DETAIL = 500  # as programs.Verdict's


class ReferenceFailed(RuntimeError):
    """The reference solution did not run through its inputs: grading against it is meaningless."""


@dataclass(frozen=True)
class TimeRule:
    """evalplus's time limits (evalplus/evalplus at commit 26d6d00: docs/execution.md,
    `evalplus/eval/__init__.py`: `untrusted_check`, defaults in `evalplus/config.py`).

    Input i may take max(`min_s`, `factor` × t_i), t_i being the reference solution's time on it
    measured on this machine (evalplus's `--min-time-limit` and `--gt-time-limit-factor`). The
    run over one input set is stopped after min(`cap_s`, the sum of those limits) + 2 s (evalplus:
    +1 s, and its process join waits 1 s more; `cap_s` is its EVALPLUS_TIMEOUT_PER_TASK).
    """

    min_s: float = 4.0
    factor: float = 4.0
    cap_s: float = 60.0

    def input_limits(self, seconds: Sequence[float]) -> list[float]:
        return [max(self.min_s, self.factor * t) for t in seconds]

    def run_limit(self, input_limits: Sequence[float]) -> float:
        return min(self.cap_s, sum(input_limits)) + 2.0

    def describe(self) -> str:
        return (
            f"per input max({self.min_s:g} s, {self.factor:g} x the reference's time); "
            f"per input set min({self.cap_s:g} s, their sum) + 2 s"
        )


@dataclass(frozen=True)
class Reference:
    """The reference solution on one input set: its `outputs` (base64 of a pickle, opaque here)
    and the `seconds` each input took."""

    outputs: str
    seconds: list[float]


def run_reference(
    solution: str, entry_point: str, inputs: Sequence[Any], *, memory_mb: int = 2048
) -> Reference:
    """Run the reference `solution`'s `entry_point` on each input (a list of arguments).

    Raises ReferenceFailed (with the sandbox's reason) when it does not get through them all.
    """
    limits = Limits(
        wall_s=_REFERENCE_WALL_S,
        cpu_s=_REFERENCE_WALL_S,
        memory_mb=memory_mb,
        output_bytes=_REFERENCE_OUTPUT_BYTES,
    )
    job = {"mode": "reference", "solution": solution, "entry_point": entry_point, "inputs": inputs}
    result = run_python(_harness(), stdin=json.dumps(job), limits=limits)
    found = _result(result)
    if found is None:
        raise ReferenceFailed(_unreported(result, "the reference solution").detail)
    return Reference(found["outputs"], [float(t) for t in found["seconds"]])


def check_differential(
    solution: str,
    entry_point: str,
    inputs: Sequence[Any],
    reference: Reference,
    *,
    atol: float,
    rule: TimeRule = TimeRule(),
    memory_mb: int = 2048,
    mode: str = "isolated",
) -> Verdict:
    """Whether `solution`'s `entry_point` returns the reference's output on every input.

    Stops at the first failure: "wrong_answer" (the output differs, by evalplus's comparison:
    `differential_harness._same`), "timeout" (over that input's limit, or the whole run over
    its limit), "failed" (it raised, or the solution did not load). `mode`: "isolated" runs the
    candidate in a sandbox of its own, called from the harness's (`isolated_tests.run_beside`),
    so its outputs must be plain values; "same_process" runs it inside the harness.
    """
    if len(inputs) != len(reference.seconds):
        raise ValueError(f"{len(inputs)} inputs but a reference for {len(reference.seconds)}")
    time_limits = rule.input_limits(reference.seconds)
    run_s = rule.run_limit(time_limits)
    job = {
        "mode": "check",
        "entry_point": entry_point,
        "inputs": inputs,
        "time_limits": time_limits,
        "atol": atol,
    }
    limits = Limits(wall_s=run_s, cpu_s=run_s, memory_mb=memory_mb)
    if mode == "isolated":
        program, result = run_beside(
            solution,
            lambda fd: (_harness(), _stdin({**job, "channel": _channel(fd)}, reference)),
            limits,
        )
    elif mode == "same_process":
        program = None
        result = run_python(
            _harness(), stdin=_stdin({**job, "solution": solution}, reference), limits=limits
        )
    else:
        raise ValueError(f"mode must be isolated or same_process, got {mode!r}")
    found = _result(result)
    passed = found is not None and found["status"] == "passed"
    if program is not None and program.status == "timeout" and not passed:
        return failure_verdict(program, "the candidate")  # the harness only saw it vanish
    if found is None:
        return _unreported(result, "")
    if passed:
        return Verdict(True, "passed")
    where = "" if found["input"] is None else f"input {found['input'] + 1}/{len(inputs)}: "
    return Verdict(False, found["status"], (where + found["detail"])[:_MAX_DETAIL])


def _stdin(job: dict[str, Any], reference: Reference) -> str:
    """The harness's stdin: the job's JSON line, then the reference outputs."""
    return json.dumps(job) + "\n" + reference.outputs


def _channel(fd: int) -> dict[str, Any]:
    """What the harness needs to call a candidate served in another sandbox."""
    return {"fd": fd, "source": CHANNEL_SOURCE}


@functools.cache
def _harness() -> str:
    """The program every run executes: the harness module's own text."""
    return Path(differential_harness.__file__).read_text(encoding="utf-8")


def _result(result: RunResult) -> dict[str, Any] | None:
    """The harness's result line, None when the run did not end well or wrote none."""
    marker = differential_harness.RESULT
    lines = [line for line in result.stdout.splitlines() if line.startswith(marker)]
    if not result.ok or not lines:
        return None
    parsed: dict[str, Any] = json.loads(lines[-1][len(marker) :])
    return parsed


def _unreported(result: RunResult, where: str) -> Verdict:
    """Why a run gave no result: the sandbox's reason, or an exit before the harness reported."""
    if result.ok:
        return Verdict(False, "failed", f"{where}: exited before reporting a result".lstrip(": "))
    return failure_verdict(result, where)
