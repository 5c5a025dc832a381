"""Small records in the formats of the paper's code sets: DeepSeek-Coder's LeetCode contest file
and LiveCodeBench's release files (fields as the real files have them, problems made up)."""

from __future__ import annotations

import json
from pathlib import Path

# One problem as Evaluation/LeetCode/data/20240121-Jul.jsonl of DeepSeek-Coder writes it: the stub
# uses `List` without importing it (the evaluator's imports provide it), the test one assert per
# case on `my_solution`.
_STUB = "class Solution:\n    def sumOfEvens(self, nums: List[int]) -> int:\n        "
CONTEST_ROW = {
    "task_id": "weekly-contest-999-sum-of-evens",
    "url": "https://leetcode.com/problems/sum-of-evens",
    "title": "sum-of-evens",
    "meta": {"questionId": "9999", "difficulty": "Easy", "titleSlug": "sum-of-evens"},
    "prompt": f'"""\nReturn the sum of the even numbers in nums.\n"""\n{_STUB}',
    "prompt_sft": "Return the sum of the even numbers in nums.\n\n\n"
    "Please complete the code below to solve above prblem:\n```python\n" + _STUB + "\n```",
    "test": "\nmy_solution = Solution()\n\n"
    'test_input = { "nums": [1,2,3,4] }\n'
    "assert my_solution.sumOfEvens(**test_input) == 6\n\n"
    'test_input = { "nums": [7] }\n'
    "assert my_solution.sumOfEvens(**test_input) == 0",
    "start_time": 1705804200,
}
CONTEST_RIGHT = (
    "class Solution:\n"
    "    def sumOfEvens(self, nums: List[int]) -> int:\n"
    "        return sum(x for x in nums if x % 2 == 0)\n"
)
CONTEST_WRONG = CONTEST_RIGHT.replace("x % 2 == 0", "x % 2 == 1")


def lcb_problem(question_id: str, contest_date: str) -> dict[str, str]:
    """A stdin problem in code_generation_lite's format (the fields the loader reads), dated
    `contest_date`."""
    case = {"input": "2\n", "output": "4\n", "testtype": "stdin"}
    return dict(
        question_id=question_id,
        contest_date=contest_date,
        question_content="Print twice the number read.",
        public_test_cases=json.dumps([case]),
    )


# Two problems per release file, dated so that a window can cut inside and between files.
LCB_RELEASE_DATES = {
    "test.jsonl": ["2023-05-07T00:00:00", "2023-08-20T00:00:00"],
    "test2.jsonl": ["2024-01-13T00:00:00", "2024-04-06T00:00:00"],
    "test3.jsonl": ["2024-05-18T00:00:00", "2024-06-30T12:30:00"],
    "test4.jsonl": ["2024-08-03T00:00:00", "2024-09-01T00:00:00"],
}


def write_lcb_release(folder: Path) -> Path:
    """Files test.jsonl .. test4.jsonl of a made-up code_generation_lite; ids name file and row."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, (name, dates) in enumerate(LCB_RELEASE_DATES.items(), 1):
        lines = [
            json.dumps(lcb_problem(f"f{number}-{row}", date)) for row, date in enumerate(dates)
        ]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
