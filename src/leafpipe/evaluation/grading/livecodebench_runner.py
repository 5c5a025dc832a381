"""What LiveCodeBench's own runner (LiveCodeBench/LiveCodeBench, `lcb_runner`, commit 28fef95)
does to an answer that changes whether it passes: how the code is read out of it, what is
imported before it runs, and how a stdio program's output is compared with the expected one.

The registry applies the first two to the rows of `livecodebench` entries (docs/grading.md); the
output comparison is every stdio check's (`programs.check_stdio`).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# lcb_runner/evaluation/testing_util.py `import_string`, character for character: the runner puts
# it before every program, stdio and call-based alike, so an answer may use `deque` or `gcd`
# without importing them, and recursion may go 50000 deep.
IMPORTS = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
    "from random import *\nfrom statistics import *\nfrom itertools import *\n"
    "from functools import *\nfrom operator import *\nfrom io import *\nfrom sys import *\n"
    "from json import *\nfrom builtins import *\nfrom typing import *\nimport string\nimport re\n"
    "import datetime\nimport collections\nimport heapq\nimport bisect\nimport copy\nimport math\n"
    "import random\nimport statistics\nimport itertools\nimport functools\nimport operator\n"
    "import io\nimport sys\nimport json\nsys.setrecursionlimit(50000)\n"
)


def extract_code(completion: str) -> str:
    """The code of an answer as lcb_runner reads it (`utils/extraction_utils.py`, chat models):
    the text between the last two lines that contain ```, whatever their language tag; "" (a
    program that prints nothing) when fewer than two such lines exist.

    So the last complete block wins, and an answer cut off inside a block yields the text before
    that block's opening fence, not the unfinished code.
    """
    lines = completion.split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return ""
    return "\n".join(lines[fences[-2] + 1 : fences[-1]])


def output_lines(text: str) -> list[str]:
    """The lines a stdio output is compared by: the whole text stripped, then each line stripped
    (`testing_util.get_stripped_lines`). Blank lines inside the output count."""
    return [line.strip() for line in text.strip().split("\n")]


def lines_match(got: str, want: str) -> bool:
    """Two stripped output lines match when equal, or when both are whitespace-separated numbers
    that are equal as Decimals ("1.0" and "1", "2  3" and "2 3"; `testing_util.grade_stdio`)."""
    if got == want:
        return True
    got_numbers, want_numbers = _decimals(got), _decimals(want)
    try:
        return got_numbers is not None and got_numbers == want_numbers
    except InvalidOperation:  # comparing a signalling NaN raises: the runner counts that wrong
        return False


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except InvalidOperation:
        return None
