"""DeepSeek-Coder's way of reading the code out of an answer (evaluate_leetcode.py, commit 2f9fd85),
applied to leetcode_contest entries, on answers where it and leafpipe's longest-block rule
disagree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from contest_rows import CONTEST_RIGHT, CONTEST_ROW, CONTEST_WRONG

from leafpipe.evaluation.grading.leetcode_contest_runner import extract_code
from leafpipe.evaluation.grading.programs import extract_code as longest_block
from leafpipe.evaluation.registry import benchmark_rows, grade_generations

STUB = "class Solution:\n    def sumOfEvens(self, nums: List[int]) -> int:\n        "
BODY = "\n        return sum(x for x in nums if x % 2 == 0)\n"


def test_the_first_python_block_wins_however_long_the_later_ones():
    answer = "```python\nfirst = 1\n```\nBetter:\n```python\nsecond = 2\nthird = 3\n```\n"
    assert extract_code(answer, "") == "first = 1"
    assert longest_block(answer) == "second = 2\nthird = 3\n"
    # CodeLlama's tags count as a python fence.
    assert extract_code("[PYTHON]\nx = 1\n[/PYTHON]\n```python\ny = 2\n```", "") == "x = 1"


def test_without_a_python_fence_the_code_ends_at_the_first_top_level_keyword_line():
    answer = "x = 1\ny = 2\n# Example\nprint(x)\n"
    assert extract_code(answer, "") == "x = 1\ny = 2"
    assert extract_code("class A:\n    pass\nclass B:\n    pass", "") == "class A:\n    pass"
    # The keywords are prefixes, not words: "default" ends the code at its "def".
    assert extract_code("x = 1\ndefault = 2\n", "") == "x = 1"
    # An untagged fence is no python fence: the text before "\nclass" is all that is kept.
    assert extract_code("Here:\n```\nclass A:\n    pass\n```", "") == "Here:\n```"


@pytest.mark.parametrize(
    "answer",
    ["Here:\n```python\nclass A:\n    pass\n", "```python3\nx = 1\n```", "```pythonx = 1\n```"],
)
def test_a_python_fence_without_a_block_gives_the_whole_answer(answer):
    assert extract_code(answer, "") == answer


def test_an_answer_continuing_the_method_body_is_appended_to_the_stub():
    message = CONTEST_ROW["prompt_sft"]
    assert extract_code(BODY, message) == STUB.strip() + "\n" + BODY
    # A message without a python fence gives its text up to the first keyword line; one whose
    # python fence opens no block leaves the answer as it is.
    assert extract_code(BODY, "Fill in:\nprint(1)") == "Fill in:\n" + BODY
    assert extract_code(BODY, "Fill in:\n```python\nclass A:") == BODY


# Each answer is graded one way by DeepSeek-Coder's rule, the other way by the longest block.
LONGER_WRONG_SECOND = (
    f"```python\n{CONTEST_RIGHT}```\nA longer variant:\n"
    f"```python\n# keeps the odd ones, for comparison\n{CONTEST_WRONG}```\n"
)
USAGE_FIRST = (
    "Usage:\n```python\nprint(Solution().sumOfEvens([1, 2]))\n```\n"
    f"Solution:\n```python\n{CONTEST_RIGHT}```\n"
)
BARE_WITH_DEMO = f"{CONTEST_RIGHT}\n# Example\nprint(Solution().sumOfEvens(nums))\n"
UNTAGGED_BLOCK = f"Here:\n```\n{CONTEST_RIGHT}```\n"
DEEPSEEK_PASSES = {"longer wrong second": LONGER_WRONG_SECOND, "bare with demo": BARE_WITH_DEMO}
DEEPSEEK_FAILS = {"usage first": USAGE_FIRST, "untagged block": UNTAGGED_BLOCK}


def _graded(tmp_path: Path, kind: str, answers: list[str]) -> list[bool]:
    path = tmp_path / "20240121-Jul.jsonl"
    path.write_text(json.dumps(CONTEST_ROW) + "\n", encoding="utf-8")
    rows, _ = benchmark_rows({"kind": "leetcode_contest"}, str(path))
    gens = [{"id": rows[0]["id"], "completion": answer} for answer in answers]
    graded, _ = grade_generations(rows, gens, {"kind": kind, "timeout_s": 10.0}, workers=2)
    return [g["correct"] for g in graded]


def test_contest_entries_grade_by_deepseeks_rule_where_the_longest_block_disagrees(tmp_path):
    answers = [*DEEPSEEK_PASSES.values(), BODY, *DEEPSEEK_FAILS.values()]
    deepseek = [True] * (len(DEEPSEEK_PASSES) + 1) + [False] * len(DEEPSEEK_FAILS)
    assert _graded(tmp_path, "leetcode_contest", answers) == deepseek
    # The same rows under another kind are read by leafpipe's rule: every verdict flips.
    assert _graded(tmp_path, "jsonl", answers) == [not passed for passed in deepseek]
