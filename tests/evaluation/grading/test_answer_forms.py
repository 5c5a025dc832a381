"""The forms a careful grader reads answers in: units, currency, degree signs, percent words,
e-notation, inequalities and choice letters; each loosening next to the near miss it must keep."""

from __future__ import annotations

import time

import pytest

from leafpipe.evaluation.grading.answer_forms import (
    choice_letter,
    comparable,
    percent_number,
    simplify,
)


@pytest.mark.parametrize(
    ("answer", "form"),
    [
        ("18 dollars", "18"),
        ("18 dollars per week", "18"),
        (r"\$18.00", "18.00"),
        ("$1,250.50", "1,250.50"),
        (r"\text{12 cm}", "12"),
        (r"\textbf{18}", "18"),
        ("12 cm^2", "12"),
        ("5 km/h", "5"),
        ("12 m", "12"),  # a unit symbol, unlike the variable of "3 x"
        ("2.5 hours", "2.5"),
        ("a^2 square units", "a^2"),  # the unit words go, the power they follow stays
        ("60°", "60"),
        ("20%", r"20\%"),
        ("20 percent", r"20\%"),
        ("1.5e3", r"1.5\times10^{3}"),
        ("2.5E-4", r"2.5\times10^{-4}"),
        ("x < 3", r"(-\infty, 3)"),
        (r"x \geq 1", r"[1, \infty)"),
        ("-3 < x < 2", "(-3, 2)"),
        # Kept: words that carry value, variables, word answers, e inside an expression.
        ("5 million", "5 million"),
        ("2 pi", "2 pi"),
        ("3 x", "3 x"),
        (r"\text{Monday}", r"\text{Monday}"),
        ("2e^{x}", "2e^{x}"),
        ("x = 3 or x = 5", "x = 3 or x = 5"),
        ("x < y < z < w", "x < y < z < w"),
        ("xy < 3", "xy < 3"),  # a product, not one variable
        ("-3 < xy < 2", "-3 < xy < 2"),
        ("< x < 2", "< x < 2"),  # no lower bound
        ("1 < x > 0", "1 < x > 0"),  # relations facing both ways: no interval
    ],
)
def test_simplify(answer, form):
    assert simplify(answer) == form


def test_a_unit_word_never_changes_the_number():
    assert simplify("18 dollars") != simplify("180")
    assert simplify("1.5e3") != simplify("150")
    assert simplify(r"\text{12 cm}") != "120"


@pytest.mark.parametrize(
    ("predicted", "gold", "forms"),
    [
        ("(C) 18", "C", ("C", "C")),
        ("C) 18", "C", ("C", "C")),
        (r"\textbf{(D)}\ 24", "D", ("D", "D")),
        ("(C) 18", r"\text{(D)}", ("C", r"\text{(D)}")),  # the wrong letter stays wrong
        ("(C) 18", "18", ("(C) 18", "18")),  # not a choice question: left alone
    ],
)
def test_a_choice_with_its_options_text_is_read_as_its_letter_only_against_a_letter(
    predicted, gold, forms
):
    assert comparable(predicted, gold) == forms


@pytest.mark.parametrize(
    ("answer", "letter"), [("C", "C"), ("(C)", "C"), (r"\text{(C)}", "C"), ("CD", None)]
)
def test_choice_letter(answer, letter):
    assert choice_letter(answer) == letter


@pytest.mark.parametrize(
    ("form", "gold", "number"),
    [
        (r"12.5\%", "12.5", "12.5"),
        (r"-50\%", "-50", "-50"),
        (r"5\%", "1", "5"),  # 1 is the smallest percent figure
        (r"0.75\%", r"\frac34", None),  # a proportion: 0.75% is not 3/4
        (r"0.75\%", "0.75", None),
        (r"\%", "50", None),
        ("12.5", "12.5", None),
    ],
)
def test_percent_number_only_against_a_percent_figure(form, gold, number):
    assert percent_number(form, gold) == number


@pytest.mark.parametrize(
    "degenerate",
    [
        " " * 50_000 + "x",
        "1 " + "a " * 25_000,
        "x <" + " " * 50_000 + "=",
        r"1 \le " * 8_000,
        r"\text{1" * 8_000,
        "1" * 50_000 + "e",
        "percent " * 6_000,
    ],
    ids=["spaces", "words", "relation-spaces", "relations", "open-text", "digits", "percent"],
)
def test_simplify_is_linear_on_degenerate_input(degenerate):
    start = time.monotonic()
    simplify(degenerate)
    comparable(degenerate, "C")
    percent_number(degenerate + r"\%", "50")
    assert time.monotonic() - start < 2.0  # a quadratic scan of 50k characters takes minutes
