"""LiveCodeBench's functional (LeetCode-style, `testtype: functional`) tests as its runner checks
them (`grade_call_based`, `compile_code` and `check_correctness` of lcb_runner/evaluation at
commit 28fef95): the script that calls the answer's method once per case, and its time limits.

What decides who passes there, and is reproduced here:

- **Per call**: each call gets its own wall-clock limit (6 s by default), raised as an exception
  (an `Exception`, so an answer's own `except Exception` may swallow it, as there); the answer's
  top-level code together with `Solution()` gets one call's time too.
- **Whole answer**: (limit + 1) s per case + 5 s, the runner's global timeout; one slow case
  among many fast ones passes where one limit on the whole script would fail it.
- **Comparison**: the inputs and the expected output are JSON (one argument per line); a result
  that is a tuple becomes a list, at the top level only, then `==` decides. So `[(1, 2)]` is not
  `[[1, 2]]` and `{1: 2}` is not `{"1": 2}`, though a JSON round trip would make them equal.
- **The callee**: one `Solution()` for all the cases (state kept in `self` carries over) when the
  answer defines a class `Solution` (lcb_runner: when its code contains "class Solution"), else
  the answer's top-level function of that name.

The script is a row's `test` (with the default limit), run after the answer like any `script`
row; a livecodebench entry rebuilds it with its `timeout_s` as the per-call limit
(`programs.check_code`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

# lcb_runner's default limit of one call (`run_test(timeout=6)`); a stdio case gets the same.
CALL_LIMIT_S = 6.0
# The exceptions the script raises, by name: a verdict's status is read from them.
TIMEOUT_ERROR = "CallTimeLimitExceeded"
WRONG_ANSWER_ERROR = "WrongAnswer"

# Defines the call timer: `_lcb_arm(s)` raises TIMEOUT_ERROR after s seconds of wall time, 0
# disarms. In both the prelude (to time the answer's top-level code) and the test script.
_TIMER = f'''\
import signal as _lcb_signal


class {TIMEOUT_ERROR}(Exception):
    """lcb_runner's TimeoutException: an Exception, so `except Exception` catches it there too."""


def _lcb_time_up(signum, frame):
    raise {TIMEOUT_ERROR}("a call ran past its time limit")


def _lcb_arm(seconds):
    _lcb_signal.signal(_lcb_signal.SIGALRM, _lcb_time_up)
    _lcb_signal.setitimer(_lcb_signal.ITIMER_REAL, seconds)
'''

_CALLS = f"""\
import json as _lcb_json


class {WRONG_ANSWER_ERROR}(Exception):
    pass


# The timer armed before the answer ran covers Solution() too, as compile_code's does.
_lcb_callee = Solution() if isinstance(globals().get("Solution"), type) else None
_lcb_arm(0)
_lcb_cases = [
    ([_lcb_json.loads(_line) for _line in _input.split("\\n")], _lcb_json.loads(_output))
    for _input, _output in _lcb_json.loads(_LCB_CASES)
]
_lcb_method = (
    globals()[_LCB_METHOD] if _lcb_callee is None else getattr(_lcb_callee, _LCB_METHOD)
)
for _lcb_number, (_lcb_args, _lcb_expected) in enumerate(_lcb_cases, start=1):
    _lcb_arm(_LCB_CALL_LIMIT_S)
    try:
        _lcb_got = _lcb_method(*_lcb_args)
    finally:
        _lcb_arm(0)
    if isinstance(_lcb_got, tuple):
        _lcb_got = list(_lcb_got)
    if not _lcb_got == _lcb_expected:
        raise {WRONG_ANSWER_ERROR}(
            f"case {{_lcb_number}} of {{len(_lcb_cases)}}: got {{_lcb_got!r}}, "
            f"expected {{_lcb_expected!r}}"
        )
"""


def calls_test(
    cases: Sequence[Sequence[str]], method: str, call_limit_s: float = CALL_LIMIT_S
) -> str:
    """The test script of a functional row: `method` called on each (input, output) case of
    `cases` (LiveCodeBench's JSON texts), each call within `call_limit_s` seconds."""
    if not call_limit_s > 0:
        raise ValueError(f"call_limit_s must be positive, got {call_limit_s!r}")
    pairs = json.dumps([[given, expected] for given, expected in cases])
    settings = (
        f"_LCB_CASES = {pairs!r}\n"
        f"_LCB_METHOD = {method!r}\n"
        f"_LCB_CALL_LIMIT_S = {float(call_limit_s)!r}\n"
    )
    return _TIMER + settings + _CALLS


def timed_prelude(imports: str, call_limit_s: float) -> str:
    """`imports`, then the call timer armed: the answer's top-level code and `Solution()` get one
    call's time, as lcb_runner's `compile_code` gives them."""
    return f"{imports}\n{_TIMER}_lcb_arm({float(call_limit_s)!r})\n"


def answer_limit_s(call_limit_s: float, n_cases: int) -> float:
    """The wall time of a whole answer: `check_correctness`'s global timeout, (limit + 1) s per
    case plus 5 s."""
    return (call_limit_s + 1.0) * n_cases + 5.0


def failure_status(error_line: str) -> str:
    """A failed script's status from the last line of its traceback: "timeout" for a call past
    its limit, "wrong_answer" for a result that differs, else "failed"."""
    if TIMEOUT_ERROR in error_line:
        return "timeout"
    if error_line.startswith(WRONG_ANSWER_ERROR):
        return "wrong_answer"
    return "failed"
