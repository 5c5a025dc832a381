"""HumanEval+ rows from a file in evalplus's format, graded as evalplus grades them: base and plus
scores apart, where the file's own `test` (HumanEval's check) would pass what plus inputs catch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from leafpipe.evaluation.grading.differential import ReferenceFailed, TimeRule
from leafpipe.evaluation.humaneval_plus import grade_humaneval_plus
from leafpipe.evaluation.registry import benchmark_rows, grade_generations
from leafpipe.evaluation.rows import BenchmarkFormatError

EVEN = {
    "task_id": "HumanEval/900",
    "prompt": 'def is_even(n: int) -> bool:\n    """Whether n is even."""\n',
    "entry_point": "is_even",
    "canonical_solution": "    return n % 2 == 0\n",
    "test": "def check(c):\n    assert c(2) is True\n    assert c(3) is False\n",
    "contract": "",
    "base_input": [[2], [3]],
    "plus_input": [[0], [-4], [1000001]],
    "atol": 0,
}
MEAN = {
    "task_id": "HumanEval/901",
    "prompt": 'def mean(xs: list) -> float:\n    """The mean of xs."""\n',
    "entry_point": "mean",
    "canonical_solution": "    return sum(xs) / len(xs)\n",
    "test": "def check(candidate):\n    assert abs(candidate([1.0, 2.0]) - 1.5) < 1e-9\n",
    "contract": "",
    "base_input": [[[1.0, 2.0]]],
    "plus_input": [[[0.1, 0.2, 0.3]], [[1e-3] * 7]],
    "atol": 0,
}
# Right on HumanEval's two inputs, wrong on evalplus's 0 and -4.
ONLY_BASE = "```python\ndef is_even(n: int) -> bool:\n    return n == 2\n```"
RIGHT = "    return n % 2 == 0\n"
# Float sums in another order: equal within evalplus's 1e-6 tolerance, not bit for bit.
FSUM = "```python\nimport math\n\ndef mean(xs):\n    return math.fsum(xs) / len(xs)\n```"


def _file(tmp_path: Path, *records: dict) -> str:
    path = tmp_path / "HumanEvalPlus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_rows_are_humaneval_rows_carrying_evalplus_inputs(tmp_path):
    path = _file(tmp_path, EVEN, MEAN)
    plus, info = benchmark_rows({"kind": "humaneval_plus"}, path)
    plain, _ = benchmark_rows({"kind": "humaneval"}, path)
    assert info["available"] and [r["id"] for r in plus] == ["HumanEval/900", "HumanEval/901"]
    for with_inputs, without in zip(plus, plain):
        assert with_inputs["instruction"] == without["instruction"]
        assert {k: v for k, v in with_inputs["code"].items() if k != "reference"} == without["code"]
    assert plus[0]["code"]["reference"] == {
        "canonical_solution": EVEN["canonical_solution"],
        "base_input": [[2], [3]],
        "plus_input": [[0], [-4], [1000001]],
        "atol": 0.0,
    }


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"base_input": [[2], 3]}, r'row 1: field "base_input" item 2 should be a list'),
        ({"canonical_solution": " "}, r'row 1: field "canonical_solution" is empty'),
        ({"plus_input": "[[0]]"}, r'row 1: field "plus_input" should be a list'),
    ],
)
def test_bad_evalplus_fields_are_errors_naming_row_and_field(tmp_path, change, words):
    with pytest.raises(BenchmarkFormatError, match=words):
        benchmark_rows({"kind": "humaneval_plus"}, _file(tmp_path, {**EVEN, **change}))


def test_base_and_plus_are_scored_apart_and_plus_catches_what_the_original_test_misses(tmp_path):
    rows, _ = benchmark_rows({"kind": "humaneval_plus"}, _file(tmp_path, EVEN, MEAN))
    gens = [
        {"id": "HumanEval/900", "completion": ONLY_BASE},
        {"id": "HumanEval/900", "completion": RIGHT},
        {"id": "HumanEval/901", "completion": FSUM},
        {"id": "HumanEval/901", "completion": "    return xs[0]\n"},
    ]
    base_graded, base = grade_generations(rows, gens, {"kind": "humaneval_plus", "tests": "base"})
    plus_graded, plus = grade_generations(rows, gens, {"kind": "humaneval_plus"})
    assert sum([0.1, 0.2, 0.3]) / 3 != math.fsum([0.1, 0.2, 0.3]) / 3  # FSUM needs the tolerance
    assert [g["correct"] for g in base_graded] == [True, True, True, False]
    assert [g["correct"] for g in plus_graded] == [False, True, True, False]
    missed = plus_graded[0]
    assert missed["base_correct"] and missed["status"] == "wrong_answer"
    assert missed["detail"] == "plus_input: input 1/3: expected True, got False"
    assert base["accuracy"] == 0.75 and plus["accuracy"] == 0.5
    assert plus["base_accuracy"] == 0.75 and plus["tests"] == "plus" and base["tests"] == "base"
    assert plus["status"] == {"passed": 2, "wrong_answer": 2}
    assert plus["time_limits"] == TimeRule().describe()
    # The file's `test` field, HumanEval's own check, passes the answer the plus inputs fail.
    plain, _ = benchmark_rows({"kind": "humaneval"}, _file(tmp_path, EVEN))
    old, summary = grade_generations(plain, gens[:1], {"kind": "humaneval"})
    assert old[0]["correct"] and summary["time_limits"] == "10 s per program"


def test_tests_on_another_kind_and_a_failing_canonical_solution_are_errors(tmp_path):
    rows, _ = benchmark_rows({"kind": "humaneval"}, _file(tmp_path, EVEN))
    gens = [{"id": "HumanEval/900", "completion": RIGHT}]
    with pytest.raises(ValueError, match="applies to humaneval_plus only"):
        grade_generations(rows, gens, {"kind": "humaneval", "tests": "base"})
    broken = {**EVEN, "canonical_solution": "    return 1 // (n - 3)\n"}
    rows, _ = benchmark_rows({"kind": "humaneval_plus"}, _file(tmp_path, broken))
    with pytest.raises(ReferenceFailed, match="HumanEval/900: the canonical solution failed"):
        grade_humaneval_plus({r["id"]: r for r in rows}, gens, "base", memory_mb=2048, workers=1)
    with pytest.raises(ValueError, match="tests must be one of"):
        grade_humaneval_plus({r["id"]: r for r in rows}, gens, "all", memory_mb=64, workers=1)  # type: ignore[arg-type]
