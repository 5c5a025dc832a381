"""Planted mutants of a Python module: small AST edits a test suite should notice.

A standard, small set of operators (comparison and arithmetic swaps, and/or, dropped `not` and
unary minus, constants off by one or flipped, `return None`, swapped call arguments, a dropped
keyword argument). Only function bodies are mutated, and not their text: docstrings, string
constants, f-strings, `raise` statements (their message), logging calls, annotations and
decorators are skipped, since a change there says nothing about what the tests check; module and
class bodies hold settings and dataclass fields, configuration rather than logic.

A mutant's id, `module:line:col:operator`, stays the same while the code around it does not
move, so a list of judged-equivalent mutants can name them.
"""

from __future__ import annotations

import ast
import copy
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

COMPARISON_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
ARITHMETIC_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
}
BOOLEAN_SWAPS: dict[type[ast.boolop], type[ast.boolop]] = {ast.And: ast.Or, ast.Or: ast.And}
LOGGERS = frozenset({"log", "logger", "logging", "warnings"})  # calls on these only report
COMMUTATIVE = frozenset({"max", "min"})  # swapping their arguments is always equivalent
SKIPPED_FIELDS = frozenset({"annotation", "returns", "decorator_list"})  # types and wrappers


@dataclass(frozen=True)
class Mutant:
    """One planted change: `index` is the changed node's position in `ast.walk` order of the
    module's tree, `replacement` the node put there; `before`/`after` show the change."""

    id: str
    module: str
    line: int
    before: str
    after: str
    index: int
    replacement: ast.AST


def _name(op: ast.AST) -> str:
    return type(op).__name__


def _swapped(node: ast.AST, **fields: object) -> ast.AST:
    new = copy.copy(node)
    for field, value in fields.items():
        setattr(new, field, value)
    return new


def _expression_mutants(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """(operator, replacement) pairs for one expression node."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARISON_SWAPS:
                to = COMPARISON_SWAPS[type(op)]()
                ops = [*node.ops[:i], to, *node.ops[i + 1 :]]
                place = f"@{i + 1}" if len(node.ops) > 1 else ""  # which of a chain's
                yield f"{_name(op)}->{_name(to)}{place}", _swapped(node, ops=ops)
    elif isinstance(node, ast.BinOp) and type(node.op) in ARITHMETIC_SWAPS:
        to = ARITHMETIC_SWAPS[type(node.op)]()
        yield f"{_name(node.op)}->{_name(to)}", _swapped(node, op=to)
    elif isinstance(node, ast.AugAssign) and type(node.op) in ARITHMETIC_SWAPS:
        to = ARITHMETIC_SWAPS[type(node.op)]()
        yield f"{_name(node.op)}->{_name(to)}", _swapped(node, op=to)
    elif isinstance(node, ast.BoolOp):
        to = BOOLEAN_SWAPS[type(node.op)]()
        yield f"{_name(node.op)}->{_name(to)}", _swapped(node, op=to)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        yield f"drop_{_name(node.op)}", node.operand
    elif isinstance(node, ast.Constant):
        yield from _constant_mutants(node)
    elif isinstance(node, ast.Call):
        yield from _call_mutants(node)


def _constant_mutants(node: ast.Constant) -> Iterator[tuple[str, ast.AST]]:
    value = node.value
    if isinstance(value, bool):
        yield f"{value}->{not value}", ast.Constant(not value)
    elif isinstance(value, int) and value in (0, 1):
        yield f"{value}->{1 - value}", ast.Constant(1 - value)
    elif isinstance(value, (int, float)):
        yield f"{value!r}->{value + 1!r}", ast.Constant(value + 1)


def _call_mutants(node: ast.Call) -> Iterator[tuple[str, ast.AST]]:
    args = node.args
    commutative = isinstance(node.func, ast.Name) and node.func.id in COMMUTATIVE
    if len(args) >= 2 and not commutative and not any(isinstance(a, ast.Starred) for a in args[:2]):
        yield "swap_args", _swapped(node, args=[args[1], args[0], *args[2:]])
    for i, keyword in enumerate(node.keywords):
        if keyword.arg is not None:
            kept = [*node.keywords[:i], *node.keywords[i + 1 :]]
            yield f"drop_kw_{keyword.arg}", _swapped(node, keywords=kept)


def _is_none(node: ast.AST | None) -> bool:
    """`return` or `return None`: mutating it to `return None` would change nothing."""
    return node is None or (isinstance(node, ast.Constant) and node.value is None)


def _is_docstring(node: ast.AST, parent: ast.AST | None) -> bool:
    body = getattr(parent, "body", None)
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and isinstance(body, list)
        and bool(body)
        and body[0] is node
    )


def _is_logging_call(node: ast.AST) -> bool:
    func = node.func if isinstance(node, ast.Call) else None
    return isinstance(func, ast.Attribute) and ast.unparse(func.value) in LOGGERS


def _skipped(node: ast.AST, parent: ast.AST | None) -> bool:
    """Whether `node` and everything under it is text, types or reporting, not behaviour."""
    return (
        isinstance(node, (ast.JoinedStr, ast.Raise))
        or _is_docstring(node, parent)
        or _is_logging_call(node)
    )


def _children(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    for field, value in ast.iter_fields(node):
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, ast.AST):
                yield field, child


def _walk_indices(tree: ast.AST) -> dict[int, int]:
    """id(node) -> its position in `ast.walk(tree)`: the same position in another parse of the
    same source is the same node."""
    return {id(node): i for i, node in enumerate(ast.walk(tree))}


def _mutable_nodes(tree: ast.Module, functions: Sequence[str] | None) -> Iterator[ast.AST]:
    """The nodes of `tree` that may be mutated: inside a function (module and class bodies hold
    settings, dataclass fields and decorators: configuration, not logic) and inside one of
    `functions` (qualified names, e.g. `_Batch.records`) when they are given; outside skipped
    text, types and reporting."""

    def visit(node: ast.AST, parent: ast.AST | None, scope: str, inside: bool) -> Iterator[ast.AST]:
        if _skipped(node, parent):
            return
        if isinstance(node, ast.ClassDef):
            scope = f"{scope}.{node.name}" if scope else node.name
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = f"{scope}.{node.name}" if scope else node.name
            inside = inside or functions is None or scope in functions
        if inside:
            yield node
        for field, child in _children(node):
            if field not in SKIPPED_FIELDS:
                yield from visit(child, node, scope, inside)

    yield from visit(tree, None, "", False)


def mutants(source: str, module: str, functions: Sequence[str] | None = None) -> Iterator[Mutant]:
    """Every planted mutant of `source` (the text of dotted `module`), in source order."""
    tree = ast.parse(source)
    index = _walk_indices(tree)
    found = []
    seen: Counter[str] = Counter()
    for node in _mutable_nodes(tree, functions):
        if isinstance(node, ast.Return) and not _is_none(node.value):
            candidates: Iterator[tuple[str, ast.AST]] = iter(
                [("return_None", _swapped(node, value=ast.Constant(None)))]
            )
        else:
            candidates = _expression_mutants(node)
        for operator, replacement in candidates:
            line, col = node.lineno, node.col_offset  # type: ignore[attr-defined]
            before, after = ast.unparse(node), ast.unparse(replacement)
            key = f"{module}:{line}:{col}:{operator}"
            seen[key] += 1  # `a * b * c`: both products start at a; the outer one comes first
            found.append(
                Mutant(
                    key if seen[key] == 1 else f"{key}#{seen[key]}",
                    module,
                    line,
                    before,
                    after,
                    index[id(node)],
                    replacement,
                )
            )
    yield from sorted(found, key=lambda m: (m.line, m.id))


def mutated_source(source: str, mutant: Mutant) -> str:
    """`source` with `mutant` planted, as text (comments and formatting are not kept)."""
    tree = ast.parse(source)
    nodes = list(ast.walk(tree))
    target = nodes[mutant.index]
    for parent in nodes:
        for field, value in ast.iter_fields(parent):
            if value is target:
                setattr(parent, field, copy.deepcopy(mutant.replacement))
            elif isinstance(value, list) and any(v is target for v in value):
                value[[v is target for v in value].index(True)] = copy.deepcopy(mutant.replacement)
    return ast.unparse(ast.fix_missing_locations(tree))
