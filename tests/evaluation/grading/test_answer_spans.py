"""Where a marked answer ends: reasons after it are cut, boxes listed beside it are joined, and
a box after prose is a revision."""

from __future__ import annotations

import time

import pytest

from leafpipe.evaluation.grading.answer_spans import cut_reason, listed_boxes
from leafpipe.evaluation.grading.boxed_scan import find_boxes


@pytest.mark.parametrize(
    ("answer", "cut"),
    [
        ("18 because she sells 9 eggs", "18"),
        ("18, since 9 eggs at $2 each", "18"),
        ("7 (since 3 + 4 = 7)", "7"),
        ("7, which is odd", "7"),
        ("x = 3", "x = 3"),
        ("3 or 5", "3 or 5"),
        ("Tuesday", "Tuesday"),  # "as" inside a word is no reason
    ],
)
def test_cut_reason(answer, cut):
    assert cut_reason(answer) == cut


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        (r"x = \boxed{3} or x = \boxed{5}", "3, 5"),
        (r"$x = \boxed{3}$ and $x = \boxed{5}$.", "3, 5"),
        (r"$x_1 = \boxed{3}$, $x_2 = \boxed{5}$", "3, 5"),
        (r"\boxed{3} \quad \boxed{5}", "3, 5"),
        (r"\boxed{3}\boxed{5}", "3, 5"),  # no gap at all
        (r"\boxed{3}" + " " * 40 + r"\boxed{5}", "3, 5"),  # the longest gap of a list
        (r"\boxed{3}" + " " * 41 + r"\boxed{5}", "5"),
        (r"\boxed{18}, \boxed{18}", "18"),  # a repeated box adds nothing
        (r"\boxed{4}. Wait, that is wrong: \boxed{6}", "6"),  # a revision, not a list
        (r"\boxed{4} hmm \boxed{6}", "6"),
        (r"\boxed{\boxed{3}}", "3"),  # the inner box of a nested pair
        (r"\boxed{2} or \boxed{\frac{1}{2", ""),  # the last box is cut off: no answer
    ],
)
def test_listed_boxes(text, answer):
    assert listed_boxes(text, find_boxes(text)) == answer


def test_listed_boxes_is_linear_on_a_long_list():
    text = ", ".join(rf"\boxed{{{i}}}" for i in range(20_000))
    start = time.monotonic()
    answer = listed_boxes(text, find_boxes(text))
    assert time.monotonic() - start < 2.0  # a quadratic scan of 50k characters takes minutes
    assert answer == ", ".join(str(i) for i in range(20_000))


def test_cut_reason_is_linear_on_degenerate_input():
    start = time.monotonic()
    cut_reason(" " * 50_000 + "x")
    cut_reason("so" * 25_000)
    assert time.monotonic() - start < 2.0  # a quadratic scan of 50k characters takes minutes
