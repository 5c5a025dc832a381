"""Mutation score of the core modules: the fraction of planted mutants their tests kill.

Plants every mutant of `mutation_operators` in each target's modules (`mutation_targets`), and
the hand-written ones of `mutation_named.toml`, and runs the target's tests against each
(`mutation_runner`: a forked child per mutant, never a changed source file). A mutant is killed
when a test fails or the run times out. The score leaves out the mutants judged equivalent in
`mutation_equivalents.toml`. On demand, not in CI: a full run takes about 15 minutes with two
workers (docs/testing.md).

    python bench/mutation_score.py [--target NAME ...] [--limit N] [--jobs 2] [--out x.json]
    python bench/mutation_score.py --list          # the mutants, without running them
    python bench/mutation_score.py --named-only    # only the hand-written mutants
    python bench/mutation_score.py --only 'metrics:4[0-9]:'  # some mutants, by id (a check)
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT / "src")]

from common import argument_parser  # noqa: E402
from mutation_operators import mutants, mutated_source  # noqa: E402
from mutation_runner import KILLED, SURVIVED, TIMEOUT, Job, Outcome, run_jobs  # noqa: E402
from mutation_targets import TARGETS, Target  # noqa: E402

ROOTS = (ROOT / "src", ROOT / "tests")  # what each child imports afresh
NAMED = BENCH / "mutation_named.toml"
EQUIVALENTS = BENCH / "mutation_equivalents.toml"
# What the tests import from outside the project, imported once before forking (the targets'
# own modules are imported too, for their dependencies, and then forgotten by each child).
WARM = (
    "pytest",
    "hypothesis",
    "_hypothesis_pytestplugin",
    "anyio.pytest_plugin",
    "pdb",
    "xml.etree.ElementTree",
    "sympy",
    "math_verify",
    "pyarrow.dataset",
    "pyarrow.pandas_compat",
    "pyarrow.parquet",
    "tokenizers.trainers",
    "transformers.convert_slow_tokenizer",
    "transformers.tokenization_utils_tokenizers",
    "transformers.models.llama.modeling_llama",
    "transformers.models.qwen2.modeling_qwen2",
)


@dataclass(frozen=True)
class Planted:
    """A mutant ready to run: its id, target, module, the change, the mutated source and the
    pytest arguments of the tests it runs against."""

    id: str
    target: str
    module: str
    path: str
    before: str
    after: str
    source: str
    tests: tuple[str, ...]


def _module_path(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SystemExit(f"mutation target module {module} not found")
    return spec.origin


def _sample(items: list[Planted], limit: int | None) -> list[Planted]:
    """`limit` mutants spread evenly over `items` (all of them without a limit)."""
    if limit is None or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def operator_mutants(target: Target) -> list[Planted]:
    """Every operator mutant of `target`'s sources, in source order."""
    planted = []
    for source in target.sources:
        path = _module_path(source.module)
        text = Path(path).read_text(encoding="utf-8")
        for m in mutants(text, source.module, source.functions):
            mutated = mutated_source(text, m)
            planted.append(
                Planted(
                    m.id, target.name, source.module, path, m.before, m.after, mutated, target.tests
                )
            )
    return planted


def named_mutants(targets: Sequence[Target]) -> list[Planted]:
    """The hand-written mutants of `mutation_named.toml` whose target is one of `targets`."""
    by_name = {t.name: t for t in targets}
    planted: list[Planted] = []
    for entry in tomllib.loads(NAMED.read_text(encoding="utf-8"))["mutant"]:
        if entry["target"] not in by_name:
            continue
        path = ROOT / entry["file"]
        text = path.read_text(encoding="utf-8")
        if text.count(entry["old"]) != 1:
            raise SystemExit(
                f"named mutant {entry['name']}: its text occurs {text.count(entry['old'])} "
                f"times in {entry['file']}, not once; update {NAMED.name}"
            )
        module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
        tests = tuple(entry.get("tests", by_name[entry["target"]].tests))
        planted.append(
            Planted(
                f"named:{entry['name']}",
                entry["target"],
                module,
                str(path),
                " ".join(entry["old"].split()),
                " ".join(entry["new"].split()),
                text.replace(entry["old"], entry["new"]),
                tests,
            )
        )
    return planted


def _interleaved(planted: Sequence[Planted]) -> list[Planted]:
    """`planted` taken round-robin over the targets, so that a run stopped early has a sample of
    every target."""
    by_target: dict[str, list[Planted]] = {}
    for p in planted:
        by_target.setdefault(p.target, []).append(p)
    rounds = max((len(ps) for ps in by_target.values()), default=0)
    return [ps[i] for i in range(rounds) for ps in by_target.values() if i < len(ps)]


def _warm_up(planted: Sequence[Planted]) -> None:
    """Import, in this process, what the children would each import again: the fork server's
    state. The project's own modules are imported only for their dependencies."""
    from _pytest.config import default_plugins

    plugins = [f"_pytest.{name}" for name in default_plugins]
    for module in [*WARM, *plugins, *sorted({p.module for p in planted})]:
        try:
            importlib.import_module(module)
        except ImportError as error:
            print(f"warm-up: {module} not imported ({error})", file=sys.stderr)


def _jobs(planted: Sequence[Planted], baselines: dict[tuple[str, ...], Outcome]) -> list[Job]:
    """A job per mutant; its timeout allows a mutant to slow its tests down, not to hang them."""
    return [
        Job(p.id, p.tests, p.module, p.path, p.source, 2 * baselines[p.tests].seconds + 10)
        for p in planted
    ]


def _baselines(planted: Sequence[Planted], workers: int) -> dict[tuple[str, ...], Outcome]:
    """Each test selection's run on the unmutated code, by selection; exits naming the target
    whose tests fail unmutated, since no mutant can be judged against them."""
    selections = {p.tests: p.target for p in planted}
    jobs = [
        Job(f"baseline {i}", tests, None, None, None, 900) for i, tests in enumerate(selections)
    ]
    outcomes = run_jobs(jobs, ROOTS, workers)
    for job, (tests, target) in zip(jobs, selections.items()):
        outcome = outcomes[job.key]
        if outcome.status != SURVIVED:
            raise SystemExit(
                f"baseline failed for target {target!r}: its tests ({' '.join(tests)}) "
                f"do not pass unmutated (pytest exit {outcome.exit_code}, first failure "
                f"{outcome.first_failure}); fix them before scoring mutants"
            )
        print(
            f"baseline {target}: {outcome.seconds:.1f} s ({outcome.cpu_s:.1f} s CPU)",
            file=sys.stderr,
        )
    return {tests: outcomes[job.key] for job, tests in zip(jobs, selections)}


def summarize(
    planted: Sequence[Planted], outcomes: dict[str, Outcome], equivalents: dict[str, str]
) -> dict[str, Any]:
    """Per-target counts, the total killed fraction (equivalents left out), the survivors, and
    the named mutants' verdicts."""
    targets: dict[str, dict[str, int]] = {}
    survivors, named = [], []
    for p in planted:
        if p.id.startswith("named:"):
            o = outcomes[p.id]
            named.append({"id": p.id, "status": o.status, "first_failure": o.first_failure})
            continue
        counts = targets.setdefault(
            p.target,
            {"mutants": 0, KILLED: 0, SURVIVED: 0, TIMEOUT: 0, "equivalent": 0, "cpu_s": 0},
        )
        counts["mutants"] += 1
        if p.id in equivalents:
            counts["equivalent"] += 1
            continue
        status = outcomes[p.id].status
        counts[status] += 1
        counts["cpu_s"] += round(outcomes[p.id].cpu_s or 0.0)
        if status == SURVIVED:
            survivors.append({"id": p.id, "before": p.before, "after": p.after})
    for counts in targets.values():
        scored = counts["mutants"] - counts["equivalent"]
        counts_killed = counts[KILLED] + counts[TIMEOUT]
        counts["score"] = counts_killed / scored if scored else 1.0  # type: ignore[assignment]
    scored = sum(c["mutants"] - c["equivalent"] for c in targets.values())
    killed = sum(c[KILLED] + c[TIMEOUT] for c in targets.values())
    return {
        "targets": targets,
        "killed": killed,
        "scored": scored,
        "score": killed / scored if scored else None,
        "survivors": survivors,
        "named": named,
        "equivalents": [{"id": k, "reason": v} for k, v in equivalents.items()],
    }


def report(summary: dict[str, Any], seconds: float) -> None:
    """Print `summary` (from `summarize`) as a table, survivors and named verdicts."""
    head = (
        f"{'target':<24}{'mutants':>8}{'killed':>8}{'surv.':>7}{'t/o':>5}{'equiv':>6}"
        f"{'score':>8}{'cpu s':>7}"
    )
    print(head)
    for name, c in summary["targets"].items():
        print(
            f"{name:<24}{c['mutants']:>8}{c[KILLED]:>8}{c[SURVIVED]:>7}{c[TIMEOUT]:>5}"
            f"{c['equivalent']:>6}{c['score']:>8.1%}{c['cpu_s']:>7}"
        )
    if summary["score"] is not None:
        print(
            f"killed {summary['killed']} of {summary['scored']} (equivalents left out): "
            f"{summary['score']:.1%} in {seconds / 60:.1f} min"
        )
    for s in summary["survivors"]:
        print(f"survived {s['id']}: {s['before']}  ->  {s['after']}")
    for n in summary["named"]:
        print(f"{n['id']}: {n['status']} (first failure: {n['first_failure']})")
    for e in summary["equivalents"]:
        print(f"equivalent {e['id']}: {e['reason']}")


def _equivalents(planted: Sequence[Planted]) -> dict[str, str]:
    """The judged-equivalent ids of `planted`; warns about listed ids no mutant has (stale)."""
    listed = tomllib.loads(EQUIVALENTS.read_text(encoding="utf-8")).get("equivalent", {})
    ids = {p.id for p in planted}
    targets = {p.module for p in planted if not p.id.startswith("named:")}  # AST-mutated
    for stale in sorted(k for k in listed if k not in ids and k.split(":")[0] in targets):
        print(f"stale equivalent (no such mutant now): {stale}", file=sys.stderr)
    return {k: v for k, v in listed.items() if k in ids}


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    p = argument_parser(__doc__)
    names = [t.name for t in TARGETS]
    p.add_argument("--target", action="append", choices=names, help="default: all")
    p.add_argument("--limit", type=int, help="run at most N mutants per target, evenly spread")
    p.add_argument("--jobs", type=int, default=2, help="mutants run at a time")
    p.add_argument("--list", action="store_true", help="list the mutants; run nothing")
    p.add_argument("--named-only", action="store_true", help="only the hand-written mutants")
    p.add_argument("--out", type=Path, help="write the JSON summary here")
    p.add_argument("--only", help="only the mutants whose id matches this regex (not a score)")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    targets = [t for t in TARGETS if args.target is None or t.name in args.target]
    planted = (
        []
        if args.named_only
        else [m for t in targets for m in _sample(operator_mutants(t), args.limit)]
    )
    planted += named_mutants(targets)
    equivalents = _equivalents(planted)
    if args.only:
        planted = [m for m in planted if re.search(args.only, m.id)]
    if args.list:
        for m in planted:
            mark = "  (equivalent)" if m.id in equivalents else ""
            print(f"{m.id}: {m.before}  ->  {m.after}{mark}")
        return None
    started = time.monotonic()
    _warm_up(planted)
    baselines = _baselines(planted, args.jobs)
    to_run = _interleaved([m for m in planted if m.id not in equivalents])
    outcomes = run_jobs(_jobs(to_run, baselines), ROOTS, args.jobs, progress=True)
    summary = summarize(planted, outcomes, equivalents)
    seconds = time.monotonic() - started
    summary["seconds"] = round(seconds, 1)
    summary["baselines_s"] = {" ".join(k): round(v.seconds, 1) for k, v in baselines.items()}
    report(summary, seconds)
    if args.out:
        summary["outcomes"] = [asdict(o) for o in outcomes.values()]
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
