"""DeepSeek-Coder's LeetCode contest set: its rows, and grading as its evaluator does it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from contest_rows import CONTEST_RIGHT, CONTEST_ROW, CONTEST_WRONG

from leafpipe.evaluation.benchmarks import load_benchmark
from leafpipe.evaluation.grading.programs import check_script
from leafpipe.evaluation.leetcode_contest import CONTEST_IMPORTS
from leafpipe.evaluation.registry import benchmark_rows, grade_generations
from leafpipe.evaluation.rows import BenchmarkFormatError


def _contest_file(tmp_path: Path, *records: dict) -> Path:
    path = tmp_path / "20240121-Jul.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _answer(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}```\n"


def test_a_contest_row_asks_prompt_sft_and_checks_with_the_evaluators_imports(tmp_path):
    bench = load_benchmark("leetcode_contest", path=_contest_file(tmp_path, CONTEST_ROW))
    (row,) = bench.rows
    assert row["id"] == "weekly-contest-999-sum-of-evens" and row["task"] == "code"
    assert row["instruction"] == CONTEST_ROW["prompt_sft"]  # the user turn, char for char
    assert row["code"] == {
        "kind": "script",
        "prompt": CONTEST_IMPORTS,
        "entry_point": "Solution",
        "test": CONTEST_ROW["test"],
        "cases": [],
    }
    assert CONTEST_IMPORTS.splitlines()[0] == "import math"
    assert CONTEST_IMPORTS.splitlines()[-3:] == [
        "from typing import *",
        "from collections import *",
        "from functools import *",
    ]
    assert bench.substitute == "" and bench.left_out == {}


def test_the_evaluators_program_passes_a_right_solution_and_fails_a_wrong_one(tmp_path):
    (row,) = load_benchmark("leetcode_contest", path=_contest_file(tmp_path, CONTEST_ROW)).rows
    code = row["code"]
    # DeepSeek-Coder's program: its imports, the answer's code, then the test, as one script.
    assert check_script(f"{code['prompt']}\n{CONTEST_RIGHT}", code["test"]).passed
    wrong = check_script(f"{code['prompt']}\n{CONTEST_WRONG}", code["test"])
    assert not wrong.passed and "AssertionError" in wrong.detail
    # Without the imports the stub's `List` is undefined: they are part of the check.
    bare = check_script(CONTEST_RIGHT, code["test"])
    assert not bare.passed and "NameError" in bare.detail


def test_grading_a_contest_benchmark_scores_the_right_answer_only(tmp_path):
    rows, info = benchmark_rows(
        {"kind": "leetcode_contest"}, str(_contest_file(tmp_path, CONTEST_ROW))
    )
    assert info["available"] and info["rows"] == 1 and "substitute" not in info
    generations = [
        {"id": rows[0]["id"], "completion": _answer(CONTEST_RIGHT)},
        {"id": rows[0]["id"], "completion": _answer(CONTEST_WRONG)},
    ]
    graded, summary = grade_generations(rows, generations, {"k": [1]}, workers=1)
    assert [g["correct"] for g in graded] == [True, False]
    assert summary["n"] == 1 and summary["samples"] == 2 and summary["accuracy"] == 0.5


def test_contest_rows_without_tests_are_skipped_and_bad_fields_named(tmp_path):
    untested = {**CONTEST_ROW, "task_id": "weekly-contest-999-untested", "test": "\n"}
    bench = load_benchmark("leetcode_contest", path=_contest_file(tmp_path, CONTEST_ROW, untested))
    assert [r["id"] for r in bench.rows] == [CONTEST_ROW["task_id"]]
    assert bench.skipped == [
        {
            "row": "weekly-contest-999-untested",
            "line": 2,
            "reason": "no test cases (field test holds no assert)",
        }
    ]
    broken = {key: value for key, value in CONTEST_ROW.items() if key != "prompt_sft"}
    with pytest.raises(BenchmarkFormatError, match=r'row 1: field "prompt_sft" is missing'):
        load_benchmark("leetcode_contest", path=_contest_file(tmp_path, broken))
