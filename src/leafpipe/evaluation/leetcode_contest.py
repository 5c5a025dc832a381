"""DeepSeek-Coder's LeetCode contest set, the paper's LeetCode column, as code rows.

DeepSeek-Coder collected the 180 problems of LeetCode's weekly and biweekly contests from July
2023 to January 2024 (Evaluation/LeetCode/data/20240121-Jul.jsonl of deepseek-ai/DeepSeek-Coder),
each with 100 test cases, in a widened HumanEval format: `task_id`, `prompt_sft` (the chat
message: statement, examples, constraints and the `class Solution` stub in a code block), `test`
(`my_solution = Solution()`, then one `assert` per case), `meta` (LeetCode's record, with
`difficulty`), `prompt` (the stub with the statement as a docstring, unused here) and
`start_time`.

Its evaluator (evaluate_leetcode.py) builds one program per answer: a fixed block of imports, the
code taken from the answer, then `test`; it runs the program with a 10 s limit and the answer
passes when nothing raises. The rows here keep exactly that: the imports are the row's `prompt`
(placed before the candidate), `test` is the file's own, checked as a `script` row.
"""

from __future__ import annotations

from leafpipe.evaluation.rows import BenchmarkRow, CodeSpec, InputRow, UnusableRow, code_row

# DeepSeek-Coder's IMPORT_HELPER["python"] (Evaluation/LeetCode/human_eval/evaluation.py), in its
# order: the evaluator writes these lines before every answer, so solutions may use `List`,
# `Counter` or `np` without importing them, as the stubs in `prompt_sft` do.
CONTEST_IMPORTS = "\n".join(
    [
        "import math",
        "import re",
        "import sys",
        "import copy",
        "import datetime",
        "import itertools",
        "import collections",
        "import heapq",
        "import functools",
        "import hashlib",
        "import numpy",
        "import numpy as np",
        "import string",
        "from typing import *",
        "from collections import *",
        "from functools import *",
    ]
)


def leetcode_contest_row(row: InputRow) -> BenchmarkRow:
    """The chat message is `prompt_sft` as it is (DeepSeek-Coder's vllm_inference.py sends it
    alone as the user turn); the check is the imports, the candidate, then `test`."""
    row_id = row.text("task_id")
    message = row.get("prompt_sft") or ""
    test = row.get("test") or ""
    if not row_id or not message.strip():
        raise UnusableRow("no task_id or no problem (field task_id or prompt_sft is empty)")
    if "assert" not in test:
        raise UnusableRow("no test cases (field test holds no assert)")
    spec: CodeSpec = {
        "kind": "script",
        "prompt": CONTEST_IMPORTS,
        # Every problem of the set is a `class Solution` stub, which its test instantiates.
        "entry_point": "Solution",
        "test": test,
        "cases": [],
    }
    return code_row(row_id, message, spec)
