"""Bounded grading of degenerate math completions: the box scan's brace matching, extraction in
time linear in the completion's length, and every pair's verdict within its timeout plus a small
fixed overhead, extraction included.

The bounds are loose on purpose (the machines are slow and shared), yet far below what the
quadratic extraction this replaces took on these completions (docs/grading.md, "Bounded
extraction").
"""

from __future__ import annotations

import time

import pytest

from leafpipe.evaluation.grading import math_answers
from leafpipe.evaluation.grading.boxed_scan import find_boxes
from leafpipe.evaluation.grading.math_answers import Extracted, extract_final_answer, grade_math

# Seconds an extraction of one degenerate completion may take here.
_EXTRACTION_BOUND_S = 1.0
# Seconds a pair may take past its timeout: the parent noticing the deadline, killing the worker.
_OVERHEAD_BOUND_S = 1.5

DIGITS = "7" * 50_000
NESTED = "{" * 25_000 + "1" + "}" * 25_000
REVISED_BOXES = "".join(f"Try \\boxed{{{i}}}. Wait, no.\n" for i in range(5_000)) + r"\boxed{42}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{\frac{\sqrt{3}}{2}}$.", [r"\frac{\sqrt{3}}{2}"]),
        (r"\boxed{\boxed{3}} and \fbox{4}", [r"\boxed{3}", "3", "4"]),  # outer box first
        (r"\boxed{\{1, 2\}}", [r"\{1, 2\}"]),  # escaped braces do not count
        (r"\boxed{a \\} b}", [r"a \\"]),  # an escaped backslash, then a closing brace
        (r"\boxed{\frac{1}{2", [""]),  # cut off mid-box
        (r"\boxed{ \boxed{2} ", ["", "2"]),
        ("hence \\boxed 5. and \\boxed\t$7$", ["5.", ""]),
        (r"\boxed\boxed\boxed 9", [r"\boxed\boxed", r"\boxed", "9"]),
        (r"\boxedx{1} \boxed", [""]),  # `\boxedx` is another command; a box at the very end
        ("no box } here {", []),
    ],
)
def test_find_boxes_gives_each_box_its_content(text, expected):
    assert [box.content(text) for box in find_boxes(text)] == expected


def test_boxes_come_in_the_order_their_markers_start():
    text = r"a \boxed{1 + \fbox{2}} b \boxed 3"
    assert [box.start for box in find_boxes(text)] == [2, 13, 25]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{" * 10_000, Extracted(None, "boxed")),
        (r"\boxed{" * 8_000, Extracted(None, "boxed")),  # the 56 KB case of docs/grading.md
        (REVISED_BOXES, Extracted("42", "boxed")),
        ("\\boxed{" + DIGITS + "}", Extracted(DIGITS, "boxed")),
        (r"\boxed{" + NESTED + "}", Extracted(NESTED, "boxed")),
        ("$" * 50_000 + " The answer is 3.", Extracted("3", "answer_is")),
        ("$" * 50_001, Extracted(None, None)),
        (r"\boxed{" + r"\frac{" * 8_000 + "1", Extracted(None, "boxed")),
        ("The answer is 1. " * 3_000 + "The answer is 2.", Extracted("2", "answer_is")),
        ("the answer is x " * 4_000, Extracted("x", "answer_is")),
        ("####" * 12_500 + " 5", Extracted("5", "hashes")),
        (r"\boxed\boxed" * 4_000 + " 8", Extracted("8", "boxed")),
    ],
    ids=lambda value: None if isinstance(value, Extracted) else f"{value[:12]!r}x{len(value)}",
)
def test_extraction_is_linear_on_degenerate_completions(text, expected):
    assert len(text) >= 48_000
    start = time.monotonic()
    found = extract_final_answer(text)
    elapsed = time.monotonic() - start
    assert found == expected
    assert elapsed < _EXTRACTION_BOUND_S


def test_ten_thousand_adjacent_boxes_are_read_in_linear_time():
    text = "".join(f"\\boxed{{{i}}}" for i in range(10_000))
    start = time.monotonic()
    found = extract_final_answer(text)
    elapsed = time.monotonic() - start
    # Boxes side by side may be read as one list; either way the last box ends the answer.
    assert found.marker == "boxed" and found.answer is not None
    assert found.answer.endswith("9999")
    assert elapsed < _EXTRACTION_BOUND_S


@pytest.fixture
def seconds_per_pair(monkeypatch):
    """Each graded pair's seconds from reaching its worker to its verdict, by index."""
    reached: dict[int, float] = {}
    took: dict[int, float] = {}
    assign, finish = math_answers._Worker.assign, math_answers._Worker.finish

    def timed_assign(worker, job, timeout_s):
        assign(worker, job, timeout_s)
        reached[job[0]] = time.monotonic()

    def timed_finish(worker, result):
        index, verdict = finish(worker, result)
        took[index] = time.monotonic() - reached[index]
        return index, verdict

    monkeypatch.setattr(math_answers._Worker, "assign", timed_assign)
    monkeypatch.setattr(math_answers._Worker, "finish", timed_finish)
    return took


# (completion, gold, (correct, decided_by) or None where sympy may or may not finish in time).
DEGENERATE_PAIRS = [
    (r"\boxed{" * 10_000, "1", (False, "no_answer")),
    (REVISED_BOXES, "42", (True, "math_verify")),
    ("\\boxed{" + DIGITS + "}", DIGITS, (True, "string")),  # past Python's int-to-str limit
    ("$" * 50_000 + " The answer is 3.", "3", (True, "math_verify")),
    (r"\boxed{" + r"\frac{" * 8_000 + "1", "1", (False, "no_answer")),
    ("The answer is 1. " * 3_000 + "The answer is 2.", "2", (True, "math_verify")),
    ("####" * 12_500 + " 5", "5", (True, "math_verify")),
    (r"\boxed{" + NESTED + "}", "1", None),
    (r"\boxed{10^{10^{8}}}", "5", (False, "timeout")),  # sympy computes 10^(10^8) exactly
]


def test_degenerate_completions_are_graded_within_their_timeout(seconds_per_pair):
    timeout_s = 5.0  # the default; the 50,000-digit pair takes about 0.5 s here
    pairs = [(completion, gold) for completion, gold, _ in DEGENERATE_PAIRS]
    verdicts = grade_math(pairs, timeout_s=timeout_s, workers=2)
    for (completion, _, expected), verdict in zip(DEGENERATE_PAIRS, verdicts):
        if expected is not None:
            assert (verdict.correct, verdict.decided_by) == expected, verdict.detail
    assert sorted(seconds_per_pair) == list(range(len(pairs)))
    assert max(seconds_per_pair.values()) < timeout_s + _OVERHEAD_BOUND_S, seconds_per_pair
    hung = verdicts[-1]  # the comparison timed out: what was compared is still shown
    assert hung.predicted == "10^{10^{8}}"
    assert hung.detail == "no verdict within 5 s; worker killed"


def test_an_extraction_that_outlasts_the_timeout_is_a_timeout(seconds_per_pair):
    # 300,000 unclosed boxes (2.1 MB) take far longer than 10 ms to extract on any machine.
    [verdict] = grade_math([(r"\boxed{" * 300_000, "1")], timeout_s=0.01, workers=1)
    assert (verdict.correct, verdict.decided_by, verdict.predicted) == (False, "timeout", None)
    assert verdict.detail == "no answer extracted within 0.01 s; worker killed"
    assert seconds_per_pair[0] < 0.01 + _OVERHEAD_BOUND_S


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\text{12 cm}", "12cm"),
        (r"\mathrm{\text{a}}b", "ab"),
        (r"\text{a{b}}", "a{b}"),  # a plain group inside a wrapper keeps its braces
        (r"\{1, 2\}", r"\{1,2\}"),  # escaped braces open no group
        (r"\text{" * 20_000 + "x" + "}" * 20_000, "x"),
    ],
)
def test_the_string_fallback_unwraps_nested_wrappers_in_one_pass(text, expected):
    start = time.perf_counter()
    assert math_answers.normalize_answer(text) == expected
    assert time.perf_counter() - start < _EXTRACTION_BOUND_S
