"""Grade completions by their final numeric answer, with a Wilson confidence interval.

LeaF's gains over plain distillation are a few points, the size of evaluation noise on a few
hundred problems, so every accuracy is reported with its 95% interval.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

# A number as models write it: optional sign, thousands commas, decimals or a simple fraction.
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:/\d+)?"
# The three ways a final answer is marked; the marker that appears last in the text wins. A
# marker followed by no number (or a box holding something else) still counts, as "no answer".
_MARKERS = re.compile(
    r"the answer is[\s:*$]*(?P<said>" + _NUMBER + r")"
    r"|\\boxed\{(?P<boxed>[^{}]*)\}"
    r"|####\s*\$?(?P<hashes>" + _NUMBER + r")",
    re.IGNORECASE,
)
# z for a two-sided 95% interval.
_Z95 = 1.959963984540054


def normalize_number(text: str) -> str | None:
    """Canonical form of a number: "7.0", "7." and "7" (or "1,000" and "1000") compare equal.

    Returns None when `text` is not a number. Non-terminating fractions stay as "p/q".
    """
    cleaned = text.strip().strip("$").strip().rstrip(".").replace(",", "")
    try:
        value = Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    rest = value.denominator
    for prime in (2, 5):
        while rest % prime == 0:
            rest //= prime
    if rest != 1:
        return f"{value.numerator}/{value.denominator}"
    decimal = Decimal(value.numerator) / Decimal(value.denominator)
    return format(decimal.normalize(), "f")


def extract_answer(text: str) -> str | None:
    """The normalised number of the last answer marker in `text`, or None.

    Markers: "The answer is X" (the world's and the training responses' format), `\\boxed{X}`
    and `#### X` (GSM8K). Only the last marker counts, since models often revise an answer; if it
    is not followed by a number the completion has no answer, even if an earlier marker had one.
    """
    last = None
    for last in _MARKERS.finditer(text):
        pass
    if last is None:
        return None
    number = next(group for group in last.groups() if group is not None)
    return normalize_number(number) if number else None


def reference_answer(reference: str) -> str | None:
    """A benchmark's `answer` field as a normalised number: either bare ("7") or marked."""
    return normalize_number(reference) or extract_answer(reference)


def wilson_interval(correct: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval for a proportion; unlike the normal one it stays inside [0, 1]."""
    if n <= 0:
        raise ValueError("a confidence interval needs at least one graded row")
    p = correct / n
    denom = 1 + _Z95**2 / n
    centre = (p + _Z95**2 / (2 * n)) / denom
    half = _Z95 * math.sqrt(p * (1 - p) / n + _Z95**2 / (4 * n * n)) / denom
    # At 0 or n correct the bound is exactly 0 or 1; rounding would otherwise leave 1e-17 off.
    low = 0.0 if correct == 0 else centre - half
    high = 1.0 if correct == n else centre + half
    return low, high


def grade_numeric_answers(
    generations: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Mark each generation correct when its extracted answer equals the reference's.

    Returns the rows with `extracted` and `correct` added, and a summary with `n`, `correct`,
    `accuracy`, `ci_low`, `ci_high`, `extracted` (rows that had an answer at all) and
    `truncated` (rows that hit the token limit, which often explains missing answers).
    An empty list is an error: an accuracy over nothing would read as a real result.
    """
    if not generations:
        raise ValueError("no generations to grade")
    graded = []
    for row in generations:
        extracted = extract_answer(row["completion"])
        expected = reference_answer(str(row["reference"]))
        if expected is None:
            raise ValueError(f"row {row['id']!r}: reference {row['reference']!r} is not a number")
        graded.append({**row, "extracted": extracted, "correct": extracted == expected})
    n = len(graded)
    correct = sum(row["correct"] for row in graded)
    low, high = wilson_interval(correct, n)
    summary = {
        "n": n,
        "correct": correct,
        "accuracy": correct / n,
        "ci_low": low,
        "ci_high": high,
        "extracted": sum(row["extracted"] is not None for row in graded),
        "truncated": sum(row.get("finish_reason") == "length" for row in graded),
    }
    return graded, summary
