"""How DeepSeek-Coder's LeetCode evaluator reads the code out of an answer
(`extract_python_code` and `evaluate_main` in Evaluation/LeetCode/evaluate_leetcode.py of
deepseek-ai/DeepSeek-Coder, commit 2f9fd85).

Its rule differs from leafpipe's own (`programs.extract_code`, the longest python block) on
answers with several blocks, with an untagged block, or with no block at all, so the rows of a
`leetcode_contest` entry are read this way to give scores comparable with DeepSeek-Coder's table.
The program it then runs (its imports, the code, the row's `test`) is the row's own
(`leetcode_contest.leetcode_contest_row`).
"""

from __future__ import annotations

import re

# The evaluator first rewrites CodeLlama's [PYTHON] ... [/PYTHON] tags as a python fence.
_TAGS = (("[PYTHON]", "```python"), ("[/PYTHON]", "```"))
# The first python block: from "```python" and a newline to the nearest newline and "```".
_FIRST_PYTHON_BLOCK = re.compile(r"```python\n(.*?)\n```", re.DOTALL)
# Without a python fence the code ends where a line starts with one of these (no word boundary:
# "default = 1" ends it at "def" as well).
_CODE_END = re.compile(r"\n(?:def|class|if|#|print)")
# An answer starting like this continues the stub's method body (a completion, not a chat reply).
_CONTINUATION = "\n        "


def extract_code(answer: str, message: str) -> str:
    """The program text DeepSeek-Coder's evaluator runs for `answer` to the user turn `message`.

    - An answer starting with a newline and 8 spaces continues the method body: the code is the
      stub (what this rule reads out of `message`: its first python block), stripped, a
      newline, then the answer.
    - Otherwise, with a "```python" fence in it, the first python block (the text between
      "```python" plus newline and the next newline plus "```"): later blocks, however long,
      are ignored.
    - Without such a fence, the answer up to the first line that starts with `def`, `class`,
      `if`, `#` or `print`; so an answer that is bare code starting with `class Solution` keeps
      its class and loses a trailing demo or comment.
    - Where a "```python" fence opens no block (never closed, or not followed by a newline), in
      the answer or in `message`, the whole answer, as the evaluator's `except` gives.
    """
    if answer.startswith(_CONTINUATION):
        stub = _python_code(message)
        return answer if stub is None else stub.strip() + "\n" + answer
    code = _python_code(answer)
    return answer if code is None else code


def _python_code(text: str) -> str | None:
    """`extract_python_code`'s rule on `text`; None where the evaluator's lookup fails."""
    for tag, fence in _TAGS:
        text = text.replace(tag, fence)
    if "```python" not in text:
        return _CODE_END.split(text, maxsplit=1)[0]
    found = _FIRST_PYTHON_BLOCK.search(text)
    return found.group(1) if found else None
