"""LiveCodeBench's runner rules (lcb_runner, commit 28fef95) where they differ from leafpipe's own:
stdio output comparison, reading the code out of an answer, and the imports before it."""

from __future__ import annotations

from leafpipe.evaluation.grading import livecodebench_runner as lcb
from leafpipe.evaluation.grading.programs import check_code, check_stdio, extract_code
from leafpipe.evaluation.grading.sandbox import Limits
from leafpipe.evaluation.registry import grade_generations

FAST = Limits(wall_s=5.0, cpu_s=5.0)
STDIO = {"kind": "stdio", "prompt": "", "entry_point": "", "test": "", "cases": [["", "2"]]}


def test_numbers_match_as_decimals_and_lines_as_stripped_text():
    assert lcb.lines_match("1.0", "1") and lcb.lines_match("2.50 3", "2.5  3")
    assert lcb.lines_match("1e3", "1000")
    assert not lcb.lines_match("a  b", "a b")  # not numbers: text must be equal
    assert not lcb.lines_match("1.0000001", "1")  # exact decimals, no tolerance
    assert not lcb.lines_match("sNaN 1", "sNaN  1")  # a comparison that raises is wrong
    assert lcb.output_lines("\n\n  3  \n4\t\n\n") == ["3", "4"]
    assert lcb.output_lines("1\n\n2") == ["1", "", "2"]  # blank lines inside count


def test_stdio_outputs_that_leafpipes_old_exact_lines_refused_now_pass():
    # Each output differs from the expected one in a way lcb_runner accepts and a line-exact
    # comparison (trailing whitespace only) did not: a float written as 1.0, leading spaces,
    # blank lines before the answer, two spaces between numbers.
    for output, expected in [("1.0", "1"), ("   7", "7"), ("\n\n5", "5"), ("1  2", "1 2")]:
        program = f"print({output!r})\n"
        assert check_stdio(program, [("", expected)], FAST).passed, output
    wrong = check_stdio("print('1.5')\n", [("", "1")], FAST)
    assert wrong.status == "wrong_answer" and "expected '1', got '1.5'" in wrong.detail
    short = check_stdio("print('1')\n", [("", "1\n\n2")], FAST)
    assert not short.passed and "<end of output>" in short.detail


def test_the_last_block_wins_where_leafpipe_picks_the_longest():
    long_wrong = (
        "import sys\n" + "# a first attempt, long and wrong\n" * 3 + "print(int(input()) * 3)\n"
    )
    answer = (
        f"First try:\n```python\n{long_wrong}```\nFixed:\n```python\nprint(int(input()) * 2)\n```\n"
    )
    assert lcb.extract_code(answer) == "print(int(input()) * 2)"
    assert extract_code(answer).startswith("import sys")
    row = {**STDIO, "cases": [["1", "2"]]}
    assert check_code(row, answer, FAST, official_runner="livecodebench").passed
    assert check_code(row, answer, FAST).status == "wrong_answer"


def test_an_answer_cut_inside_its_block_or_without_fences_gives_lcb_no_program():
    cut = "Here:\n```python\nprint(2)\n"
    assert lcb.extract_code(cut) == "" and extract_code(cut) == "print(2)\n"
    assert lcb.extract_code("print(2)") == ""
    # A fence line counts wherever ``` appears in it, and any language tag does.
    assert lcb.extract_code("x ```cpp\nprint(2)\nend```") == "print(2)"
    assert not check_code(STDIO, cut, FAST, official_runner="livecodebench").passed
    assert check_code(STDIO, cut, FAST).passed


def test_the_runner_imports_run_before_lcb_programs_only():
    answer = "```python\nq = deque([1])\nprint(gcd(4, 6) + len(q) - 1)\n```"
    assert check_code(STDIO, answer, FAST, official_runner="livecodebench").passed
    unimported = check_code(STDIO, answer, FAST)
    assert unimported.status == "failed" and "NameError" in unimported.detail
    deep = (
        "```python\ndef d(n):\n    return 0 if n == 0 else 1 + d(n - 1)\n"
        "print(d(5000) // 2500)\n```"
    )
    # The runner's recursion limit: 50000.
    assert check_code(STDIO, deep, FAST, official_runner="livecodebench").passed


def test_script_rows_run_their_prompt_before_the_answer():
    row = {
        "kind": "script",
        "prompt": "from collections import Counter",
        "entry_point": "Solution",
        "test": "assert Solution().top('aab') == 'a'\n",
        "cases": [],
    }
    answer = (
        "```python\nfrom __future__ import annotations\n"
        "class Solution:\n    def top(self, s: str) -> str:\n"
        "        return Counter(s).most_common(1)[0][0]\n```"
    )
    assert check_code(row, answer, FAST).passed
    assert not check_code({**row, "prompt": ""}, answer, FAST).passed


def test_the_registry_applies_lcb_rules_to_livecodebench_entries_only():
    row = {"id": "p", "task": "code", "instruction": "?", "answer": None, "code": STDIO}
    last_block = "```python\nprint(1)  # a first try\n```\nor better:\n```python\nprint(2.0)\n```"
    gens = [{"id": "p", "completion": last_block}]
    graded, summary = grade_generations([row], gens, {"kind": "livecodebench", "timeout_s": 6})
    assert graded[0]["correct"] and summary["time_limits"] == (
        "6 s per stdio case or call; (6 + 1) s per case + 5 s per functional answer"
    )
    graded, summary = grade_generations([row], gens, {"kind": "jsonl"})
    assert not graded[0]["correct"] and summary["status"] == {"wrong_answer": 1}
