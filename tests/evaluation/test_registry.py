"""Grading by task over a benchmark's rows: pass@1 and pass@k over samples, QA F1, clear errors."""

import pytest

from leafpipe.evaluation.registry import entry_kind, grade_generations


def _math(i, answer):
    return {"id": f"m{i}", "task": "math", "instruction": "q", "answer": answer, "code": None}


def _gen(i, sample, completion):
    return {"id": f"m{i}", "sample": sample, "completion": completion, "finish_reason": "stop"}


def test_pass_at_1_is_unbiased_over_samples_and_pass_at_k_is_reported():
    rows = [_math(0, "7"), _math(1, "\\frac{1}{2}")]
    gens = [
        _gen(0, 0, "The answer is 7."),
        _gen(0, 1, "The answer is 8."),
        _gen(1, 0, "so \\boxed{0.5}"),
        _gen(1, 1, "so \\boxed{0.5}"),
    ]
    graded, summary = grade_generations(rows, gens, {"k": [1, 2], "timeout_s": 10.0}, workers=1)
    assert [g["correct"] for g in graded] == [True, False, True, True]
    assert summary["n"] == 2 and summary["samples"] == 2 and summary["correct"] == 2
    assert summary["accuracy"] == pytest.approx(0.75)  # (1/2 + 2/2) / 2
    assert summary["pass_at_k"] == {"1": pytest.approx(0.75), "2": pytest.approx(1.0)}
    assert summary["decided_by"] == {"math_verify": 4}
    assert summary["ci_low"] < 0.75 < summary["ci_high"]


def test_qa_reports_exact_match_and_f1():
    rows = [{"id": "q", "task": "qa", "instruction": "?", "answer": ["Barack Obama"], "code": None}]
    _, summary = grade_generations(
        rows, [{"id": "q", "sample": 0, "completion": "The answer is Obama."}], {}
    )
    assert summary["accuracy"] == 0.0 and summary["f1"] == pytest.approx(2 / 3)


def test_missing_generations_and_mixed_tasks_are_errors():
    with pytest.raises(ValueError, match="1 problems have no generation"):
        grade_generations([_math(0, "1"), _math(1, "2")], [_gen(0, 0, "The answer is 1")], {})
    qa = {"id": "q", "task": "qa", "instruction": "?", "answer": ["x"], "code": None}
    with pytest.raises(ValueError, match="share one task"):
        grade_generations(
            [_math(0, "1"), qa], [_gen(0, 0, "1"), {"id": "q", "completion": "x"}], {}
        )


def test_entry_kinds_default_from_split_or_path():
    assert entry_kind({"split": "test"}) == "world"
    assert entry_kind({"path": "x.jsonl"}) == "jsonl"
    assert entry_kind({"kind": "gsm8k"}) == "gsm8k"
