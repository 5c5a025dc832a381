import pytest

from leafpipe.evaluation.grading.numeric_answers import (
    extract_answer,
    grade_numeric_answers,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step 1: 3 + 4 = 7.\nThe answer is 7.", "7"),
        ("The answer is 7.0", "7"),
        ("The answer is 1,000.", "1000"),
        ("The answer is -12.", "-12"),
        ("the answer is: $-0.50", "-0.5"),
        ("The answer is **42**", "42"),
        ("The answer is 3/4", "0.75"),
        ("The answer is 5. Wait, no. The answer is 6.", "6"),
        ("so we get \\boxed{1,234}", "1234"),
        ("\\boxed{$12$}", "12"),
        ("Natalia sold 72 clips.\n#### 72", "72"),
        ("The answer is 4. Checking: \\boxed{5}", "5"),
        ("7", None),
        ("I think it is 7.", None),
        ("The answer is unknown", None),
        ("The answer is 5. Hmm, the answer is", None),
        ("\\boxed{x}", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def _row(i, completion, reference, finish="stop"):
    return {"id": str(i), "completion": completion, "reference": reference, "finish_reason": finish}


def test_grade_numeric_answers_marks_rows_and_summarises():
    rows = [
        _row(0, "The answer is 7.", "7"),
        _row(1, "The answer is 7.", "The answer is 7."),  # world references carry the marker
        _row(2, "The answer is 1,000", "1000"),
        _row(3, "The answer is -3.", "-3"),
        _row(4, "The answer is 3.", "-3"),
        _row(5, "no idea", "5"),
        _row(6, "The answer is 8. The answer is 9", "8", finish="length"),
    ]
    graded, summary = grade_numeric_answers(rows)
    assert [g["correct"] for g in graded] == [True, True, True, True, False, False, False]
    assert [g["extracted"] for g in graded] == ["7", "7", "1000", "-3", "3", None, "9"]
    assert graded[0]["completion"] == rows[0]["completion"]
    assert "correct" not in rows[0], "input rows are not modified"
    assert summary["n"] == 7 and summary["correct"] == 4 and summary["extracted"] == 6
    assert summary["truncated"] == 1
    assert summary["accuracy"] == pytest.approx(4 / 7)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx(wilson_interval(4, 7))


def test_wilson_interval_known_values():
    # 8 of 10: Wilson 95% interval is about [0.490, 0.943].
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.1 < high < 0.2
    low, high = wilson_interval(20, 20)
    assert 0.8 < low < 0.9 and high == 1.0


def test_grade_numeric_answers_refuses_empty_input_and_non_numeric_reference():
    with pytest.raises(ValueError, match="no generations"):
        grade_numeric_answers([])
    with pytest.raises(ValueError, match="not a number"):
        grade_numeric_answers([_row(0, "The answer is 7", "seven")])
