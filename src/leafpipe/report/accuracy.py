"""The report's accuracy: the results table (one replicate's, or mean ± sd across seeds beside
each seed's own), the same figures as summary.csv and per_seed.csv, and accuracy.png.

A missing result is shown as missing, never as 0, and a model missing any benchmark gets no Avg:
an average over fewer benchmarks would not be comparable.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from leafpipe.files.atomic import atomic_path
from leafpipe.report.tables import markdown_table

MISSING = "—"
Key = tuple[str, str]  # (model, benchmark)
Tables = Mapping[int, Mapping[Key, Mapping[str, Any]]]  # seed -> (model, benchmark) -> score


def index_scores(
    scores: Sequence[Mapping[str, Any]], models: Sequence[str], benchmarks: Sequence[str]
) -> dict[int, dict[Key, Mapping[str, Any]]]:
    """Scores by seed, then (model, benchmark); an unknown or repeated one is an error, not a
    silent drop."""
    tables: dict[int, dict[Key, Mapping[str, Any]]] = {}
    for score in scores:
        key = (score["model"], score["benchmark"])
        if key[0] not in models or key[1] not in benchmarks:
            raise ValueError(f"score for {key} is outside the report's models or benchmarks")
        table = tables.setdefault(int(score["seed"]), {})
        if key in table:
            raise ValueError(
                f"two scores for model {key[0]!r} on benchmark {key[1]!r} with seed {score['seed']}"
            )
        table[key] = score
    return dict(sorted(tables.items()))


def _half_width(score: Mapping[str, Any]) -> float:
    return (score["ci_high"] - score["ci_low"]) / 2


def _average(row: Sequence[Mapping[str, Any] | None]) -> tuple[float, float] | None:
    """Unweighted mean accuracy over benchmarks (the paper's Avg) and an approximate 95% half-width.

    The half-width combines the benchmarks' own half-widths as independent errors. A model missing
    any benchmark gets no average: one over fewer benchmarks would not be comparable.
    """
    if not row or any(score is None for score in row):
        return None
    k = len(row)
    mean = sum(score["accuracy"] for score in row) / k
    half = math.sqrt(sum(_half_width(score) ** 2 for score in row)) / k
    return mean, half


def _across_seeds(values: Sequence[float | None]) -> tuple[float, float] | None:
    """Mean and sample sd of one figure across seeds; None when any seed lacks it (a mean over
    fewer seeds would not be comparable)."""
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def pooled_cells(
    tables: Tables, model: str, benchmarks: Sequence[str]
) -> list[tuple[float, float, float] | None]:
    """Per benchmark, then the Avg: (mean, low, high) as shares, the interval drawn around the
    mean being the Wilson one with a single seed and mean ± sd across several."""
    cells: list[tuple[float, float, float] | None] = []
    for bench in benchmarks:
        found = [t.get((model, bench)) for t in tables.values()]
        if len(found) == 1 and found[0] is not None:
            cells.append((found[0]["accuracy"], found[0]["ci_low"], found[0]["ci_high"]))
            continue
        pooled = _across_seeds([None if s is None else s["accuracy"] for s in found])
        cells.append(
            None if pooled is None else (pooled[0], pooled[0] - pooled[1], pooled[0] + pooled[1])
        )
    avgs = [_average([t.get((model, b)) for b in benchmarks]) for t in tables.values()]
    pooled = _across_seeds([None if a is None else a[0] for a in avgs])
    if pooled is None:
        cells.append(None)
    elif len(avgs) == 1:
        cells.append((avgs[0][0], avgs[0][0] - avgs[0][1], avgs[0][0] + avgs[0][1]))
    else:
        cells.append((pooled[0], pooled[0] - pooled[1], pooled[0] + pooled[1]))
    return cells


def _cell(score: Mapping[str, Any] | None, show_n: bool) -> str:
    if score is None:
        return MISSING
    text = f"{100 * score['accuracy']:.1f} ± {100 * _half_width(score):.1f}"
    return f"{text} (n={score['n']})" if show_n else text


def _missing_note() -> list[str]:
    return [
        "",
        f"{MISSING}: no score for this model and benchmark (not evaluated, or its output is "
        "missing). It is not a zero; a model missing any benchmark has no Avg.",
    ]


def _shared_ns(
    tables: Iterable[Mapping[Key, Mapping[str, Any]]],
    models: Sequence[str],
    benchmarks: Sequence[str],
) -> dict[str, int | None]:
    """Per benchmark, its number of problems when all its scores in `tables` share one, else
    None: a shared n goes in the column's header, a varying one in each cell."""
    shared: dict[str, int | None] = {}
    for bench in benchmarks:
        ns = _recorded(tables, models, bench, "n")
        shared[bench] = ns.pop() if len(ns) == 1 else None
    return shared


def _recorded(
    tables: Iterable[Mapping[Key, Mapping[str, Any]]], models: Sequence[str], bench: str, key: str
) -> set[Any]:
    """The values of `key` in the benchmark's scores (None where a score lacks it)."""
    return {t[(m, bench)].get(key) for t in tables for m in models if (m, bench) in t}


def _code_tests(
    tables: Iterable[Mapping[Key, Mapping[str, Any]]],
    models: Sequence[str],
    benchmarks: Sequence[str],
) -> dict[str, str]:
    """Per benchmark, the harness its code tests ran in (scores.json's `code_tests`: "isolated",
    or "same_process", where a solution could reach the tests), several joined by "/" when its
    scores differ, and marked where some isolated samples ran in one process because their tests
    pass the program objects (`same_process_fallbacks`); "" for a benchmark without code tests.
    A same-process score can be inflated
    by a solution that games its tests (docs/grading.md, "Reward hacks"), so the header says
    which one a number comes from."""
    tables = list(tables)
    modes = {
        bench: "/".join(sorted(m for m in _recorded(tables, models, bench, "code_tests") if m))
        for bench in benchmarks
    }
    for bench in benchmarks:
        if any(_recorded(tables, models, bench, "same_process_fallbacks") - {None, 0}):
            modes[bench] += "; some samples in one process"
    return modes


def _header(
    benchmark_labels: Mapping[str, str],
    shared_ns: Mapping[str, int | None],
    code_tests: Mapping[str, str],
    per: str = "",
) -> list[str]:
    """The results table's columns: Model, each benchmark (labelled with its code-test harness
    and its shared n, followed by `per`, e.g. " per seed"), Avg."""
    columns = []
    for bench, label in benchmark_labels.items():
        if code_tests[bench]:
            label = f"{label} [tests: {code_tests[bench]}]"
        columns.append(
            label if shared_ns[bench] is None else f"{label} (n={shared_ns[bench]}{per})"
        )
    return ["Model", *columns, "Avg"]


def accuracy_section(
    table: Mapping[Key, Mapping[str, Any]],
    models: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
    heading: str = "## Accuracy (%)",
) -> list[str]:
    """One replicate's table: accuracy ± the Wilson half-width, n problems per benchmark."""
    benchmarks = list(benchmark_labels)
    shared_ns = _shared_ns([table], models, benchmarks)
    rows, any_missing = [], False
    for model in models:
        scores = [table.get((model, bench)) for bench in benchmarks]
        any_missing |= any(score is None for score in scores)
        cells = [_cell(score, shared_ns[bench] is None) for score, bench in zip(scores, benchmarks)]
        avg = _average(scores)
        cells.append(MISSING if avg is None else f"{100 * avg[0]:.1f} ± {100 * avg[1]:.1f}")
        rows.append([model_labels.get(model, model), *cells])
    lines = [
        heading,
        "",
        "Accuracy ± half the width of the Wilson 95% confidence interval (the interval itself is "
        "asymmetric near 0 and 100); n = problems per benchmark.",
        "",
        *markdown_table(
            _header(benchmark_labels, shared_ns, _code_tests([table], models, benchmarks)), rows
        ),
        "",
        "Avg: unweighted mean over benchmarks, as in the paper; its ± combines the benchmarks' "
        "half-widths as independent errors.",
    ]
    return lines + (_missing_note() if any_missing else []) + [""]


def seeds_section(
    tables: Tables,
    models: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
) -> list[str]:
    """Mean ± sd across seeds, then each seed's own table."""
    benchmarks = list(benchmark_labels)
    shared_ns = _shared_ns(tables.values(), models, benchmarks)
    rows, any_missing = [], False
    for model in models:
        cells = pooled_cells(tables, model, benchmarks)
        any_missing |= any(cell is None for cell in cells)
        text = [
            MISSING if c is None else f"{100 * c[0]:.1f} ± {100 * (c[2] - c[0]):.1f}" for c in cells
        ]
        rows.append([model_labels.get(model, model), *text])
    lines = [
        "## Accuracy (%)",
        "",
        f"Mean ± sd across {len(tables)} seeds (seeds {', '.join(map(str, tables))}); "
        "each seed is a replicate of the whole run: its own world, pre-trained models, detection "
        "and distillation. "
        "The sd is the seed-to-seed spread; the paired tests below say which differences it can "
        "resolve. Avg: the unweighted mean over benchmarks, per seed, then across seeds.",
        "",
        *markdown_table(
            _header(
                benchmark_labels,
                shared_ns,
                _code_tests(tables.values(), models, benchmarks),
                per=" per seed",
            ),
            rows,
        ),
    ]
    lines += (_missing_note() if any_missing else []) + ["", "## Accuracy per seed (%)", ""]
    for seed, table in tables.items():
        lines += accuracy_section(
            table, models, model_labels, benchmark_labels, heading=f"### Seed {seed}"
        )
    return lines


def summary_frame(
    tables: Tables,
    models: Sequence[str],
    model_labels: Mapping[str, str],
    benchmarks: Sequence[str],
) -> pd.DataFrame:
    """The results table as numbers: mean accuracy across seeds in percent, NaN (an empty cell)
    where missing."""
    records = []
    for model in models:
        cells = pooled_cells(tables, model, benchmarks)
        record: dict[str, Any] = {"model": model, "label": model_labels.get(model, model)}
        for name, cell in zip([*benchmarks, "Avg"], cells):
            record[name] = math.nan if cell is None else round(100 * cell[0], 2)
        records.append(record)
    return pd.DataFrame.from_records(records, columns=["model", "label", *benchmarks, "Avg"])


def per_seed_frame(
    tables: Tables, models: Sequence[str], benchmarks: Sequence[str]
) -> pd.DataFrame:
    """Every seed's scores, one row per (seed, model, benchmark): accuracy and Wilson bounds in
    percent."""
    columns = ["seed", "model", "benchmark", "n", "correct", "accuracy", "ci_low", "ci_high"]
    records = [
        {
            "seed": seed,
            "model": m,
            "benchmark": b,
            "n": s["n"],
            "correct": s["correct"],
            **{k: round(100 * s[k], 2) for k in ("accuracy", "ci_low", "ci_high")},
        }
        for seed, table in tables.items()
        for m in models
        for b in benchmarks
        if (s := table.get((m, b)))
    ]
    return pd.DataFrame.from_records(records, columns=columns)


def accuracy_plot(
    tables: Tables,
    models: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
    path: Path,
) -> None:
    """Grouped bars of the mean over seeds with error bars (Wilson 95% with one seed, ± sd with
    several); a missing score is labelled "n/a" so it never reads as 0."""
    benchmarks = list(benchmark_labels)
    fig = Figure(figsize=(max(6.0, 2.0 + 0.35 * len(benchmarks) * len(models)), 4.5))
    ax = fig.subplots()
    width = 0.8 / max(len(models), 1)
    for j, model in enumerate(models):
        for i, cell in enumerate(pooled_cells(tables, model, benchmarks)[:-1]):
            x = i - 0.4 + width * (j + 0.5)
            if cell is None:
                ax.text(x, 1, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
                continue
            acc, low, high = (100 * v for v in cell)
            # Clamped: scores written elsewhere may carry bounds a rounding error past the value.
            err = [[max(0.0, acc - low)], [max(0.0, high - acc)]]
            ax.bar(x, acc, width, yerr=err, capsize=2, color=f"C{j}")
    handles = [Patch(color=f"C{j}", label=model_labels.get(m, m)) for j, m in enumerate(models)]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xticks(range(len(benchmarks)), [benchmark_labels[b] for b in benchmarks])
    ax.set_xlim(-0.5, len(benchmarks) - 0.5)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(
        "Accuracy with Wilson 95% confidence intervals"
        if len(tables) == 1
        else f"Mean accuracy ± sd across {len(tables)} seeds"
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
