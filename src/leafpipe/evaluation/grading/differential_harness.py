"""Differential testing inside the sandbox: one function called on a list of inputs, as evalplus
calls it (evalplus/evalplus, `evalplus/eval/__init__.py`: `unsafe_execute`; `gen/util`:
`trusted_exec`).

`differential` sends this file's text to the sandbox as the program and the job on stdin: a line
of JSON (`mode`, `solution`, `entry_point`, `inputs`, and for a check `time_limits` and `atol`),
then, for a check, the reference outputs as base64 of a pickle. Pickled, because the outputs'
types matter (a tuple is not a list, 1 is not 1.0) and JSON would lose them; only this script,
inside the sandbox, ever unpickles them.

- `reference`: runs the reference solution on a deep copy of each input and reports the outputs
  and the seconds each call took (the time limits of a check derive from them).
- `check`: runs a candidate on each input within that input's time limit and compares with the
  reference output by evalplus's rule (`_same`), stopping at the first failure (evalplus's
  default "fast check"). With a `channel` in the job (the isolated mode) the candidate is not
  here: it runs in a sandbox of its own and is called through `call_channel`, so it sees
  neither the reference outputs nor this process, and only plain values come back.

Both run the solution in a namespace of its own, with stdout, stderr and stdin swallowed while
it runs, as evalplus does. The result is the last line of stdout starting with `RESULT`.
Standard library only, plus numpy for evalplus's `np.allclose`, imported when first needed.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import math
import os
import pickle
import reprlib
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

RESULT = "leafpipe-differential-result "
# evalplus's rule: where the problem gives no tolerance and the expected output is a float (or a
# list or tuple of floats), outputs are compared with this absolute tolerance.
_FLOAT_ATOL = 1e-6
_RTOL = 1e-07  # np.testing.assert_allclose's default, which evalplus passes explicitly
_SHORT = reprlib.Repr()  # bounded reprs of outputs for the verdict's detail
_SHORT.maxstring = _SHORT.maxother = 60


class InputTimeout(Exception):
    """One call ran past its input's time limit."""


def main() -> None:
    header, _, blob = sys.stdin.read().partition("\n")
    job = json.loads(header)
    sys.stdin = io.StringIO()
    if job["mode"] == "reference":
        function = _load(job["solution"], job["entry_point"])
        _emit(_reference(function, job["inputs"]))
        return
    expected = pickle.loads(base64.b64decode(blob))
    try:
        if "channel" in job:
            function = _remote(job["channel"], job["entry_point"])
        else:
            function = _load(job["solution"], job["entry_point"])
    except BaseException as exc:  # the candidate's own failure, SystemExit included
        _emit(_outcome("failed", None, f"loading the solution: {_describe(exc)}"))
        return
    _emit(_check(function, job, expected))


def _load(solution: str, entry_point: str) -> Callable[..., Any]:
    """The function `entry_point` of `solution`, run as a module named "__solution__"."""
    namespace: dict[str, Any] = {"__name__": "__solution__"}
    with _quiet():
        exec(compile(solution, "solution.py", "exec"), namespace)
    if not callable(namespace.get(entry_point)):
        raise NameError(f"the solution defines no function {entry_point!r}")
    return namespace[entry_point]


def _remote(channel: dict[str, Any], entry_point: str) -> Callable[..., Any]:
    """The stand-in for `entry_point` of a candidate served in another process: `channel` holds
    call_channel's source and this process's descriptor of the channel (`differential`)."""
    namespace: dict[str, Any] = {"__name__": "call_channel"}
    exec(compile(channel["source"], "call_channel.py", "exec", dont_inherit=True), namespace)
    stand_ins = namespace["_Remote"](channel["fd"]).stand_ins()
    if entry_point not in stand_ins:
        raise NameError(f"the solution defines no function {entry_point!r}")
    return stand_ins[entry_point]


def _reference(function: Callable[..., Any], inputs: Sequence[list[Any]]) -> dict[str, Any]:
    outputs, seconds = [], []
    for args in inputs:
        args = copy.deepcopy(args)
        with _quiet():
            start = time.perf_counter()
            outputs.append(function(*args))
            seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "outputs": base64.b64encode(pickle.dumps(outputs)).decode()}


def _check(
    function: Callable[..., Any], job: dict[str, Any], expected: list[Any]
) -> dict[str, Any]:
    atol = job["atol"]
    inputs, limits = job["inputs"], job["time_limits"]
    for number, (args, want, limit) in enumerate(zip(inputs, expected, limits)):
        try:
            with _time_limit(limit), _quiet():
                got = function(*args)
        except InputTimeout:
            return _outcome("timeout", number, f"over its time limit of {limit:.3g} s")
        except BaseException as exc:  # the candidate's own failure, SystemExit included
            return _outcome("failed", number, _describe(exc))
        why = ""
        try:
            same, atol = _same(got, want, atol, job["entry_point"], args)
        except Exception as exc:  # evalplus: a comparison that raises is a failure
            same, why = False, f" ({_describe(exc)})"
        if not same:
            shown = f"expected {_SHORT.repr(want)}, got {_SHORT.repr(got)}{why}"
            return _outcome("wrong_answer", number, shown)
    return _outcome("passed", None, "")


def _same(
    got: Any, want: Any, atol: float, entry_point: str, args: list[Any]
) -> tuple[bool, float]:
    """evalplus's comparison, and the tolerance for the inputs after this one.

    Equal outputs pass. `find_zero` (HumanEval/32) passes any root: |poly(xs, got)| <= atol.
    Otherwise, with a tolerance (the problem's `atol`, or 1e-6 for float outputs) unequal outputs
    pass when they have the same type (and length, for a list or tuple) and `np.allclose(got,
    want, rtol=1e-07, atol=atol)`. As in evalplus, the 1e-6 once set stays for the later inputs
    of the run.
    """
    if entry_point == "find_zero":
        return abs(_poly(*args, got)) <= atol, atol
    exact = got == want
    if atol == 0 and _is_floats(want):
        atol = _FLOAT_ATOL
    if exact or atol == 0:
        return bool(exact), atol
    if type(got) is not type(want):
        return False, atol
    if isinstance(want, (list, tuple)) and len(got) != len(want):
        return False, atol
    import numpy

    return bool(numpy.allclose(got, want, rtol=_RTOL, atol=atol)), atol


def _is_floats(value: Any) -> bool:
    """A float, a non-empty list or tuple of floats, or a float numpy array (evalplus)."""
    if isinstance(value, float):
        return True
    if isinstance(value, (list, tuple)) and value:
        return all(isinstance(item, float) for item in value)
    return str(getattr(value, "dtype", "")) in ("float64", "float32")


def _poly(xs: Sequence[float], x: float) -> float:
    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise InputTimeout()

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow what the solution prints, and give it an empty stdin."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        stdin, sys.stdin = sys.stdin, io.StringIO()
        try:
            yield
        finally:
            sys.stdin = stdin


def _describe(exc: BaseException) -> str:
    """The exception's last traceback line, e.g. "ZeroDivisionError: division by zero"."""
    return traceback.format_exception_only(type(exc), exc)[-1].strip()[:200]


def _outcome(status: str, number: int | None, detail: str) -> dict[str, Any]:
    return {"status": status, "input": number, "detail": detail}


def _emit(result: dict[str, Any]) -> None:
    """Write the result line to fd 1 in full (the solution may have replaced sys.stdout)."""
    data = ("\n" + RESULT + json.dumps(result) + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


if __name__ == "__main__":
    main()
