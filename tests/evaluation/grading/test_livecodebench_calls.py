"""LiveCodeBench's functional tests as lcb_runner checks them (commit 28fef95): one time limit per
call, the answer's top-level code within one call's time, a top-level tuple taken as a list, then
`==`; on answers where leafpipe's earlier rules (a JSON round trip, one limit on the whole script)
decided otherwise."""

from __future__ import annotations

import json

import pytest

from leafpipe.evaluation.grading import livecodebench_calls as calls
from leafpipe.evaluation.grading.programs import check_code
from leafpipe.evaluation.grading.sandbox import Limits
from leafpipe.evaluation.registry import grade_generations

ONE_SECOND = Limits(wall_s=1.0, cpu_s=1.0)
LCB = "livecodebench"


def _row(cases: list[list[str]], method: str = "solve") -> dict:
    """A functional row as `livecodebench.livecodebench_row` makes it."""
    test = calls.calls_test(cases, method)
    return {"kind": "script", "prompt": "", "entry_point": method, "test": test, "cases": cases}


def _answer(body: str, top: str = "") -> str:
    return f"```python\n{top}class Solution:\n    def solve(self, x):\n        {body}\n```"


@pytest.mark.parametrize(
    ("result", "expected"),
    [("[(x, x)]", "[[1, 1]]"), ("{x: 2}", '{"1": 2}'), ("{'a': (x,)}", '{"a": [1]}')],
)
def test_results_equal_only_after_a_json_round_trip_are_wrong(result, expected):
    # leafpipe's earlier rule compared json.loads(json.dumps(result)): these passed there.
    got = eval(result, {"x": 1})
    assert json.loads(json.dumps(got)) == json.loads(expected)
    verdict = check_code(_row([["1", expected]]), _answer(f"return {result}"), official_runner=LCB)
    assert verdict.status == "wrong_answer" and "case 1 of 1" in verdict.detail


def test_a_top_level_tuple_counts_as_a_list_and_numbers_compare_by_value():
    row = _row([["1", "[1, 2.0]"], ["3", "[3, 4]"]])
    assert check_code(row, _answer("return (x, x + 1)"), official_runner=LCB).passed
    assert check_code(row, _answer("return [x, x + 1.0]"), official_runner=LCB).passed


def test_each_argument_is_one_json_line_and_a_top_level_function_is_called_without_a_class():
    row = _row([['[1, 2]\n"ab"\n{"k": null}', "[3, 2, null]"]], method="combine")
    answer = "```python\ndef combine(xs, s, d):\n    return [sum(xs), len(s), d['k']]\n```"
    assert check_code(row, answer, official_runner=LCB).passed


def test_one_solution_instance_serves_every_call():
    row = _row([["0", "1"], ["0", "2"], ["0", "3"]])
    counting = _answer("self.calls = getattr(self, 'calls', 0) + 1\n        return self.calls + x")
    assert check_code(row, counting, official_runner=LCB).passed


def test_slow_calls_within_their_own_limit_pass_where_one_limit_on_the_script_fails():
    # Four calls of 0.3 s: each within a 1 s call limit, 1.2 s together.
    row = _row([["1", "1"]] * 4)
    slow = _answer("__import__('time').sleep(0.3)\n        return x")
    assert check_code(row, slow, ONE_SECOND, official_runner=LCB).passed
    # The same row graded as a plain script: 1 s for the whole program, as leafpipe ran it.
    assert check_code(row, slow, ONE_SECOND).status == "timeout"
    assert calls.answer_limit_s(1.0, 4) == 13.0  # (1 + 1) s per case + 5 s


def test_a_call_past_its_limit_and_slow_top_level_code_time_out():
    row = _row([["1", "1"]])
    sleeping = _answer("__import__('time').sleep(3)\n        return x")
    stuck = check_code(row, sleeping, ONE_SECOND, official_runner=LCB)
    assert stuck.status == "timeout" and calls.TIMEOUT_ERROR in stuck.detail
    slow_start = _answer("return x", top="import time\ntime.sleep(3)\n")
    verdict = check_code(row, slow_start, ONE_SECOND, official_runner=LCB, mode="same_process")
    assert verdict.status == "timeout" and "solution.py" in verdict.detail
    # Isolated, the timer runs in the tests' process, which waits for the program's exports.
    verdict = check_code(row, slow_start, ONE_SECOND, official_runner=LCB)
    assert verdict.status == "timeout" and calls.TIMEOUT_ERROR in verdict.detail


def test_an_answer_that_swallows_the_timeout_is_judged_on_its_result_only_in_one_process():
    row = _row([["1", "1"]])
    swallowing = _answer(
        "try:\n            __import__('time').sleep(3)\n"
        "        except Exception:\n            pass\n        return x"
    )
    assert check_code(row, swallowing, ONE_SECOND, official_runner=LCB, mode="same_process").passed
    # Isolated, the timer is out of the answer's reach: a call past its limit is a timeout.
    assert check_code(row, swallowing, ONE_SECOND, official_runner=LCB).status == "timeout"


def test_failures_get_their_status_from_the_scripts_last_traceback_line():
    assert calls.failure_status("CallTimeLimitExceeded: a call ran past") == "timeout"
    assert calls.failure_status("__solution__.CallTimeLimitExceeded: x") == "timeout"
    assert calls.failure_status("WrongAnswer: case 2 of 3: got 1, expected 2") == "wrong_answer"
    assert calls.failure_status("NameError: name 'y' is not defined") == "failed"
    with pytest.raises(ValueError, match="call_limit_s must be positive"):
        calls.calls_test([["1", "1"]], "solve", 0)


def test_livecodebench_entries_use_their_timeout_s_per_call():
    row = {"id": "p", "task": "code", "instruction": "?", "answer": None}
    row["code"] = _row([["1", "1"]] * 3)
    gens = [{"id": "p", "completion": _answer("__import__('time').sleep(0.5)\n        return x")}]
    graded, summary = grade_generations([row], gens, {"kind": LCB, "timeout_s": 1.0}, workers=1)
    assert graded[0]["correct"] and summary["status"] == {"passed": 1}
    graded, summary = grade_generations([row], gens, {"kind": LCB, "timeout_s": 0.2}, workers=1)
    assert not graded[0]["correct"] and summary["status"] == {"timeout": 1}
