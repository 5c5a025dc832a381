"""The row types and the input-record wrapper that every benchmark converter shares.

`sources` reads a benchmark's records and `converters` converts them; the bigger converters
(`leetcode`, `livecodebench`) live in their own modules. They all build the same normalised rows
from the same `InputRow`, so those live here, where each of them can import them without
importing another.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

CODE_FORMAT = "Answer with a single python code block."


class CodeSpec(TypedDict):
    """How a code row is checked; `assemble_program` turns it and a candidate into a program."""

    kind: Literal["humaneval", "script", "stdio"]
    prompt: str
    entry_point: str
    test: str
    cases: list[list[str]]
    # HumanEval+ only (evaluation.humaneval_plus): its inputs, checked against this solution.
    reference: NotRequired[ReferenceTests]


class ReferenceTests(TypedDict):
    """evalplus's tests: the argument lists of its `base_input` (HumanEval's own tests) and
    `plus_input`, the `canonical_solution` whose outputs are expected, and `atol` for floats."""

    canonical_solution: str
    base_input: list[list[Any]]
    plus_input: list[list[Any]]
    atol: float


class BenchmarkRow(TypedDict):
    """A normalised row (docs/benchmarks.md). `instruction` is leafpipe's own prompt;
    `question` is the problem's raw text, from which other protocols build theirs
    (`protocols.Protocol.user`); a converter that cannot give it leaves it out."""

    id: str
    task: Literal["math", "code", "qa"]
    instruction: str
    answer: str | list[str] | None
    code: CodeSpec | None
    question: NotRequired[str]


class BenchmarkFormatError(ValueError):
    """Malformed input: the message names the file, the row and the field."""


class UnusableRow(Exception):
    """A well-formed row that cannot be used (no gold answer, needs images, ...)."""


_ID_FIELDS = ("id", "_id", "task_id", "question_id", "problem_name")
_TYPE_NAMES = {
    str: "a string",
    list: "a list",
    dict: "an object",
    int: "a number",
    float: "a number",
}


@dataclass(frozen=True)
class InputRow:
    """One input record and where it came from, so errors can name the file, row and field.

    `number` is what a user finds the row by in its source: in a file, its 1-based line (JSON
    Lines, blank lines counted) or position (JSON list, Parquet); in a split read through
    `datasets` (`where` names the dataset), its 0-based index, the `i` of `dataset[split][i]`
    (data.hf_dataset); None for data that is one file per row (a LeetCode template, named by
    `where`).
    """

    where: str
    number: int | None
    index: int  # 0-based position in the benchmark's order, for ids the data does not carry
    data: Mapping[str, Any]

    def error(self, field: str, problem: str) -> BenchmarkFormatError:
        row = "" if self.number is None else f" row {self.number}:"
        return BenchmarkFormatError(f'{self.where}:{row} field "{field}" {problem}')

    def get(
        self, field: str, types: type | tuple[type, ...] = str, *, required: bool = True
    ) -> Any:
        """The field's value, None when null; an absent required field or a wrong type is an
        error."""
        if field not in self.data:
            if required:
                raise self.error(field, "is missing")
            return None
        value = self.data[field]
        if value is None or isinstance(value, types):
            return value
        allowed = types if isinstance(types, tuple) else (types,)
        wanted = " or ".join(dict.fromkeys(_TYPE_NAMES.get(t, t.__name__) for t in allowed))
        raise self.error(field, f"should be {wanted}, not {type(value).__name__}")

    def text(self, field: str, *, required: bool = True) -> str:
        """A string field, stripped; '' when null or empty (the caller decides whether to skip)."""
        return (self.get(field, str, required=required) or "").strip()

    def own_id(self, fields: Sequence[str]) -> str | None:
        """The record's own id: the first of `fields` that holds a string or a number."""
        for field in fields:
            value = self.data.get(field)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
                return str(value).strip()
        return None

    def row_id(self, fields: Sequence[str], prefix: str) -> str:
        """The record's own id, else `{prefix}-{index}` (0-based, in the benchmark's order)."""
        return self.own_id(fields) or f"{prefix}-{self.index}"

    @property
    def position(self) -> int | str:
        """Its row number, or its file's name for one-record-per-file sources."""
        return self.number if self.number is not None else Path(self.where).name

    def label(self) -> int | str:
        """How the skipped report names the row: its own id, else its position."""
        found = self.own_id(_ID_FIELDS)
        return self.position if found is None else found


def code_row(
    row_id: str, instruction: str, spec: CodeSpec, *, question: str | None = None
) -> BenchmarkRow:
    row: BenchmarkRow = {
        "id": row_id,
        "task": "code",
        "instruction": instruction,
        "answer": None,
        "code": spec,
    }
    if question is not None:
        row["question"] = question
    return row


# --- checking code --------------------------------------------------------------------------

_FUTURE = re.compile(r"^from __future__ import [^\n]*\n?", re.MULTILINE)


def assemble_program(code: Mapping[str, Any], candidate: str) -> str:
    """The Python program that checks `candidate` (the code extracted from a model's answer).

    `prompt` comes first (HumanEval's function header, or the classes LeetCode predefines), then
    the candidate, then `test`; HumanEval's `check(entry_point)` call is appended. A HumanEval
    candidate may be the whole function or only its body: after the header's docstring both are
    valid Python. `from __future__` lines are moved to the top, where Python requires them. For
    `stdio` rows the program is run once per case with the case's input on stdin.
    """
    parts = [code["prompt"], candidate, code["test"]]
    if code["kind"] == "humaneval":
        parts.append(f"check({code['entry_point']})")
    body = "\n\n".join(part.rstrip("\n") for part in parts if part.strip())
    futures = "".join(
        line if line.endswith("\n") else line + "\n" for line in _FUTURE.findall(body)
    )
    return futures + _FUTURE.sub("", body) + "\n"


# LeetCode's judge and LiveCodeBench's harness run Solution code with these already imported.
JUDGE_PRELUDE = (
    "from typing import *\n"
    "import bisect, collections, functools, heapq, itertools, math, re, string"
)
