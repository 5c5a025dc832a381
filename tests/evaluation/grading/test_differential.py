"""Differential testing as evalplus does it: outputs against a reference solution's, by evalplus's
comparison rule, each input within a limit derived from the reference's time."""

from __future__ import annotations

import pytest

from leafpipe.evaluation.grading.differential import (
    Reference,
    ReferenceFailed,
    TimeRule,
    check_differential,
    run_reference,
)
from leafpipe.evaluation.grading.programs import check_humaneval
from leafpipe.evaluation.grading.sandbox import Limits

IDENTITY = "def f(x):\n    return x\n"


def _check(candidate: str, inputs: list[list], reference: str = IDENTITY, **kwargs):
    ref = run_reference(reference, "f", inputs)
    return check_differential(candidate, "f", inputs, ref, **{"atol": 0.0, **kwargs})


def test_the_time_rule_is_evalplus_min_and_factor_with_a_capped_whole_run():
    rule = TimeRule()
    assert rule.input_limits([0.0, 0.5, 2.0]) == [4.0, 4.0, 8.0]
    assert rule.run_limit([4.0, 4.0]) == 10.0  # the sum, + 2 s
    assert rule.run_limit([4.0] * 100) == 62.0  # at most 60 s, + 2 s
    assert "max(4 s, 4 x" in rule.describe()


def test_the_reference_reports_one_time_per_input_and_its_failures():
    ref = run_reference(IDENTITY, "f", [[1], [2], [3]])
    assert len(ref.seconds) == 3 and all(t >= 0 for t in ref.seconds)
    with pytest.raises(ReferenceFailed, match="ZeroDivisionError"):
        run_reference("def f(x):\n    return 1 / x\n", "f", [[1], [0]])


def test_floats_get_evalplus_tolerance_but_types_must_match():
    sums = [[0.1], [1.0]]
    reference = "def f(x):\n    return x + 0.2\n"
    assert _check("def f(x):\n    return x + 0.2 + 1e-9\n", sums, reference).passed
    assert not _check("def f(x):\n    return x + 0.2 + 1e-3\n", sums, reference).passed
    # An int where an int is expected: exact; 3.0 == 3 is equal, hence passes, as in evalplus.
    assert _check("def f(x):\n    return float(x)\n", [[3]]).passed
    # A tuple of floats where a list is expected is neither equal nor the same type.
    pair = [[[0.5, 1.5]]]
    verdict = _check("def f(x):\n    return tuple(x)\n", pair)
    assert verdict.status == "wrong_answer" and "got (0.5, 1.5)" in verdict.detail


def test_the_float_tolerance_once_set_stays_for_later_inputs_as_in_evalplus():
    # Off by one on big ints: exact comparison fails it, unless a float output came first and
    # left evalplus's 1e-6 tolerance (with rtol 1e-7) in place.
    big_off_by_one = "def f(x):\n    return x + 1 if isinstance(x, int) and x > 10**9 else x\n"
    assert not _check(big_off_by_one, [[10**12]]).passed
    assert _check(big_off_by_one, [[0.5], [10**12]]).passed


def test_find_zero_accepts_any_root():
    polynomial = """
import math
def poly(xs, x):
    return sum(c * math.pow(x, i) for i, c in enumerate(xs))
def find_zero(xs):
    lo, hi = -1000.0, 1000.0
    while hi - lo > 1e-10:
        mid = (lo + hi) / 2
        if poly(xs, mid) * poly(xs, lo) > 0:
            lo = mid
        else:
            hi = mid
    return lo
"""
    other_root = polynomial + "\ndef find_zero(xs):\n    return 2.0 if xs == [-2, 1] else 0.0\n"
    inputs = [[[-2, 1]], [[0, 1]]]  # roots 2 and 0
    ref = run_reference(polynomial, "find_zero", inputs)
    assert check_differential(other_root, "find_zero", inputs, ref, atol=1e-6).passed
    wrong = polynomial + "\ndef find_zero(xs):\n    return 1.0\n"
    assert not check_differential(wrong, "find_zero", inputs, ref, atol=1e-6).passed


def test_failures_name_the_input_and_stop_there():
    inputs = [[1], [2], [3]]
    wrong = _check("def f(x):\n    return 0 if x == 2 else x\n", inputs)
    assert wrong.status == "wrong_answer" and wrong.detail == "input 2/3: expected 2, got 0"
    crash = _check("def f(x):\n    return [][x]\n", inputs)
    assert crash.status == "failed" and crash.detail.startswith("input 1/3: IndexError")
    missing = _check("def g(x):\n    return x\n", inputs)
    assert missing.status == "failed" and "no function 'f'" in missing.detail
    exits = _check("import os\nos._exit(0)\n", inputs)
    assert exits.status == "failed" and "exited before the tests completed" in exits.detail
    ref = run_reference(IDENTITY, "f", inputs)
    shared = check_differential(
        "import os\nos._exit(0)\n", "f", inputs, ref, atol=0.0, mode="same_process"
    )
    assert shared.status == "failed" and "before reporting" in shared.detail


def test_the_isolated_candidate_cannot_reach_the_reference_outputs():
    """In one process a candidate finds the harness's expected outputs on the call stack; in its
    own sandbox it has no call stack of the harness's to search."""
    peeking = (
        "import sys\n"
        "def f(x):\n"
        "    frame = sys._getframe(1)\n"
        "    while frame and 'want' not in frame.f_locals:\n"
        "        frame = frame.f_back\n"
        "    return frame.f_locals['want'] if frame else None\n"
    )
    inputs = [[1], [2]]
    ref = run_reference("def f(x):\n    return x * 10\n", "f", inputs)
    assert check_differential(peeking, "f", inputs, ref, atol=0.0, mode="same_process").passed
    isolated = check_differential(peeking, "f", inputs, ref, atol=0.0)
    assert isolated.status == "wrong_answer" and "got None" in isolated.detail


def test_what_the_solution_prints_or_reads_does_not_disturb_the_check():
    noisy = "import sys\ndef f(x):\n    print('noise')\n    sys.stdin.read()\n    return x\n"
    assert _check(noisy, [[1], [2]]).passed


def test_per_input_limits_pass_a_slow_answer_that_a_whole_suite_limit_fails():
    # Each input takes 0.4 s, under its own 1 s limit; the four together exceed a 1 s suite.
    slow = "import time\ndef f(x):\n    time.sleep(0.4)\n    return x\n"
    inputs = [[1], [2], [3], [4]]
    assert _check(slow, inputs, rule=TimeRule(min_s=1.0)).passed
    prompt = "def f(x):\n"
    body = "    import time\n    time.sleep(0.4)\n    return x\n"
    test = "def check(candidate):\n" + "".join(
        f"    assert candidate({i}) == {i}\n" for i in range(4)
    )
    whole = check_humaneval(prompt, body, test, "f", Limits(wall_s=1.0, cpu_s=1.0))
    assert whole.status == "timeout"


def test_per_input_limits_fail_one_slow_input_that_a_whole_suite_limit_passes():
    one_slow = "import time\ndef f(x):\n    if x == 2:\n        time.sleep(1.5)\n    return x\n"
    verdict = _check(one_slow, [[1], [2]], rule=TimeRule(min_s=0.5))
    assert verdict.status == "timeout" and verdict.detail.startswith("input 2/2: over its")
    prompt = "def f(x):\n"
    body = "    import time\n    if x == 2:\n        time.sleep(1.5)\n    return x\n"
    test = "def check(candidate):\n    assert candidate(1) == 1\n    assert candidate(2) == 2\n"
    assert check_humaneval(prompt, body, test, "f", Limits(wall_s=10.0, cpu_s=10.0)).passed


def test_a_reference_for_other_inputs_is_refused():
    ref = Reference(outputs="", seconds=[0.0])
    with pytest.raises(ValueError, match="2 inputs but a reference for 1"):
        check_differential(IDENTITY, "f", [[1], [2]], ref, atol=0.0)
