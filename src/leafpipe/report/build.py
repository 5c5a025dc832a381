"""The final report: the paper's results table, paired comparisons with KD, detection quality.

LeaF's reported gains over distillation without masks are 1-3 points, about the size of
evaluation noise on a few hundred problems, and results move between seeds. So the report pools
replicates (one per seed: its own world, models and test split): accuracies are given as mean ±
sd across seeds beside each seed's own table, every comparison is paired on shared problems
(leafpipe.report.paired_stats) with a bootstrap interval and McNemar's exact test pooled over seeds, and
a difference is called one only when its interval excludes 0. A missing result is shown as
missing, never as 0.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from leafpipe.data.accounting import Accounted, accounting_section, fault_lines
from leafpipe.files.atomic import atomic_path, write_text
from leafpipe.files.provenance import write_parquet
from leafpipe.report.paired_stats import PairedComparison, align, paired_comparison
from leafpipe.report.run_record import RunRecord

MISSING = "—"
Key = tuple[str, str]  # (model, benchmark)
Tables = Mapping[int, Mapping[Key, Mapping[str, Any]]]  # seed -> (model, benchmark) -> score
# (seed, model, benchmark) -> problem id -> solved (its first sample, as the score's `correct`)
Outcomes = Mapping[tuple[int, str, str], Mapping[str, bool]]
# What the world's distractors should do (issue #15): the student loses at least this many points
# to them, the teacher at most this many.
STUDENT_RELIANCE, TEACHER_RELIANCE = 15.0, 3.0


def _index(
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


def _pooled(
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


def _accuracy_section(
    table: Mapping[Key, Mapping[str, Any]],
    models: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
    heading: str = "## Accuracy (%)",
) -> list[str]:
    """One replicate's table: accuracy ± the Wilson half-width, n problems per benchmark."""
    benchmarks = list(benchmark_labels)
    header, varying_n = ["Model"], set()
    for bench in benchmarks:
        ns = {table[(m, bench)]["n"] for m in models if (m, bench) in table}
        if len(ns) == 1:
            header.append(f"{benchmark_labels[bench]} (n={ns.pop()})")
        else:
            header.append(benchmark_labels[bench])
            varying_n.add(bench)
    header.append("Avg")
    lines = [
        heading,
        "",
        "Accuracy ± half the width of the Wilson 95% confidence interval (the interval itself is "
        "asymmetric near 0 and 100); n = problems per benchmark.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    any_missing = False
    for model in models:
        row = [table.get((model, bench)) for bench in benchmarks]
        any_missing |= any(score is None for score in row)
        cells = [_cell(score, bench in varying_n) for score, bench in zip(row, benchmarks)]
        avg = _average(row)
        cells.append(MISSING if avg is None else f"{100 * avg[0]:.1f} ± {100 * avg[1]:.1f}")
        lines.append(f"| {model_labels.get(model, model)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Avg: unweighted mean over benchmarks, as in the paper; its ± combines the benchmarks' "
        "half-widths as independent errors.",
    ]
    return lines + (_missing_note() if any_missing else []) + [""]


def _seeds_section(
    tables: Tables,
    models: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
) -> list[str]:
    """Mean ± sd across seeds, then each seed's own table."""
    benchmarks = list(benchmark_labels)
    header = ["Model"]
    for bench in benchmarks:
        ns = {t[(m, bench)]["n"] for t in tables.values() for m in models if (m, bench) in t}
        header.append(
            f"{benchmark_labels[bench]} (n={ns.pop()} per seed)"
            if len(ns) == 1
            else benchmark_labels[bench]
        )
    header.append("Avg")
    lines = [
        "## Accuracy (%)",
        "",
        f"Mean ± sd across {len(tables)} seeds (seeds {', '.join(map(str, tables))}); each seed is a "
        "replicate of the whole run: its own world, pre-trained models, detection and distillation. "
        "The sd is the seed-to-seed spread; the paired tests below say which differences it can "
        "resolve. Avg: the unweighted mean over benchmarks, per seed, then across seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    any_missing = False
    for model in models:
        cells = _pooled(tables, model, benchmarks)
        any_missing |= any(cell is None for cell in cells)
        text = [
            MISSING if c is None else f"{100 * c[0]:.1f} ± {100 * (c[2] - c[0]):.1f}" for c in cells
        ]
        lines.append(f"| {model_labels.get(model, model)} | " + " | ".join(text) + " |")
    lines += (_missing_note() if any_missing else []) + ["", "## Accuracy per seed (%)", ""]
    for seed, table in tables.items():
        lines += _accuracy_section(
            table, models, model_labels, benchmark_labels, heading=f"### Seed {seed}"
        )
    return lines


def _points(share: float) -> str:
    return MISSING if math.isnan(share) else f"{100 * share:+.1f}"


def _interval(result: PairedComparison) -> str:
    return f"{_points(result.ci_low)} to {_points(result.ci_high)}"


def pooled_pairing(
    outcomes: Outcomes, seeds: Sequence[int], candidate: Key, baseline: Key
) -> PairedComparison | None:
    """Two (model, benchmark) results paired by problem in each seed and pooled over `seeds`;
    None when any seed lacks either."""
    keys = [((s, *candidate), (s, *baseline)) for s in seeds]
    if not all(k in outcomes and b in outcomes for k, b in keys):
        return None
    return paired_comparison({k[0]: align(outcomes[k], outcomes[b]) for k, b in keys})


def paired_table(
    outcomes: Outcomes,
    seeds: Sequence[int],
    benchmarks: Sequence[str],
    baseline: str,
    models: Sequence[str],
) -> list[tuple[str, str, PairedComparison]]:
    """Each model in `models` against `baseline` on each benchmark; a pair missing in any seed is
    left out (the caller shows the gap)."""
    found = [
        (m, b, pooled_pairing(outcomes, seeds, (m, b), (baseline, b)))
        for m in models
        for b in benchmarks
    ]
    return [(m, b, r) for m, b, r in found if r is not None]


def _paired_record(model: str, baseline: str, bench: str, r: PairedComparison) -> dict[str, Any]:
    """One row of paired.csv: differences in points."""
    return {
        "model": model,
        "baseline": baseline,
        "benchmark": bench,
        "n": r.n,
        "b": r.b,
        "c": r.c,
        "diff_points": 100 * r.diff,
        "ci_low_points": 100 * r.ci_low,
        "ci_high_points": 100 * r.ci_high,
        "p_mcnemar": r.p_value,
        "mdd_points": 100 * r.mdd,
        **{f"diff_points_seed_{s}": 100 * d for s, d in r.per_seed.items()},
    }


def _per_seed_text(r: PairedComparison) -> str:
    return ", ".join(f"{_points(d)}" for d in r.per_seed.values())


def _paired_section(
    rows: Sequence[tuple[str, str, PairedComparison]],
    baseline: str,
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
) -> list[str]:
    base = model_labels.get(baseline, baseline)
    lines = [f"## Paired comparison with {base}", ""]
    if not rows:
        return lines + [
            f"Not computed: no per-problem results for {base} and a variant on the same problems.",
            "",
        ]
    lines += [
        f"Each variant against {base} on the same problems, pooled over seeds: the accuracy difference "
        "in points; its 95% interval from a paired bootstrap (problems resampled within each seed); "
        "McNemar's exact p on the discordant problems summed over seeds (+: solved by the variant "
        f"alone, −: by {base} alone); each seed's own difference; and the minimum detectable "
        "difference (MDD), the smallest true difference the pooled test would find with 80% power "
        "at α = 0.05 given the observed share of discordant problems (Connor 1987).",
        "",
        "| Model | Benchmark | difference | 95% CI | McNemar p | discordant +/− | per seed | MDD |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, bench, r in rows:
        lines.append(
            f"| {model_labels.get(model, model)} | {benchmark_labels.get(bench, bench)} | {_points(r.diff)} | "
            f"{_interval(r)} | {r.p_value:.3g} | {r.b}/{r.c} | {_per_seed_text(r)} | "
            f"{MISSING if math.isnan(r.mdd) else f'{100 * r.mdd:.1f}'} |"
        )
    return lines + [""]


def _verdict(label: str, base: str, bench: str, r: PairedComparison) -> str:
    ahead = sum(d > 0 for d in r.per_seed.values())
    stats = (
        f"{_points(r.diff)} points (95% CI {_interval(r)}, McNemar p = {r.p_value:.3g}; ahead in "
        f"{ahead} of {len(r.per_seed)} seeds)"
    )
    if r.separated:
        return f"- {label} on {bench}: {stats}: {'better' if r.diff > 0 else 'worse'} than {base}."
    mdd = "" if math.isnan(r.mdd) else f"; this run could detect about {100 * r.mdd:.1f} points"
    return f"- {label} on {bench}: {stats}: no difference from {base} that this run can tell (the CI includes 0{mdd})."


def _comparison_section(
    rows: Sequence[tuple[str, str, PairedComparison]],
    baseline: str,
    candidates: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
) -> list[str]:
    """The verdict on each LeaF variant, from the paired statistics alone."""
    base = model_labels.get(baseline, baseline)
    found = {(model, bench): r for model, bench, r in rows}
    lines = ["## Does LeaF help here?", ""]
    if not any(model in candidates for model, _ in found):
        return lines + [f"Not answered: no paired results for {base} and a LeaF model.", ""]
    lines += ["A difference is called one only when its paired 95% interval excludes 0.", ""]
    for candidate in candidates:
        for bench, bench_label in benchmark_labels.items():
            r = found.get((candidate, bench))
            label = model_labels.get(candidate, candidate)
            lines.append(
                f"- {label} on {bench_label}: no paired result."
                if r is None
                else _verdict(label, base, bench_label, r)
            )
    return lines + [""]


def _met(condition: bool) -> str:
    return "met" if condition else "not met"


def _reliance_section(
    outcomes: Outcomes,
    seeds: Sequence[int],
    models: Sequence[str],
    model_labels: Mapping[str, str],
    reliance: tuple[str, str],
    benchmark_labels: Mapping[str, str],
) -> list[str]:
    """Each model on the test with distractors against the same problems without them."""
    test, clean = reliance
    found = [(m, pooled_pairing(outcomes, seeds, (m, test), (m, clean))) for m in models]
    rows = [(m, r) for m, r in found if r is not None]
    lines = ["## Reliance on distractors", ""]
    if not rows:
        return lines + ["Not computed: no per-problem results on both tests.", ""]
    lines += [
        f"Accuracy on {benchmark_labels.get(test, test)} minus accuracy on the same problems without "
        f"their distractors ({benchmark_labels.get(clean, clean)}), pooled over seeds, paired by "
        f"problem. The world is built so that the student relies on distractors (target: at least "
        f"{STUDENT_RELIANCE:g} points lower with them) and the teacher does not (within "
        f"{TEACHER_RELIANCE:g} points).",
        "",
        "| Model | with distractors | without | difference | 95% CI | per seed | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, r in rows:
        with_d = statistics.fmean(v for s in seeds for v in outcomes[(s, model, test)].values())
        without = statistics.fmean(v for s in seeds for v in outcomes[(s, model, clean)].values())
        points = 100 * r.diff
        target = {
            "student": f"≤ −{STUDENT_RELIANCE:g}: {_met(points <= -STUDENT_RELIANCE)}",
            "teacher": f"within ±{TEACHER_RELIANCE:g}: {_met(abs(points) <= TEACHER_RELIANCE)}",
        }
        lines.append(
            f"| {model_labels.get(model, model)} | {100 * with_d:.1f} | {100 * without:.1f} | "
            f"{_points(r.diff)} | {_interval(r)} | {_per_seed_text(r)} | {target.get(model, '')} |"
        )
    return lines + [""]


def _percent(value: Any) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"


def _rate(value: Any) -> str:
    """A share in percent; NaN (nothing to measure against) shows as missing, never as 0."""
    return MISSING if value is None or pd.isna(value) else f"{100 * value:.1f}%"


def _sweep_lines(sweep: pd.DataFrame, configured: Any, depth: int = 3) -> list[str]:
    """The percentile sweep as a table, the configured percentile (if detection used one) marked;
    `depth`: its heading's level."""
    lines = [
        "",
        "#" * depth + " Percentile sweep",
        "",
        "The stored teacher − student differences re-thresholded at other percentiles (same cap and "
        "span limits; instruction tokens). A flat precision near the random rate means no percentile "
        "would help. The configured percentile is marked when detection used the percentile strategy.",
        "",
    ]
    by_score = "score" in sweep.columns  # one sweep per score variant (detection/sweep.csv)
    lines += [
        "| "
        + ("score | " if by_score else "")
        + "percentile | precision | recall | F1 | flagged |",
        "|" + "---|" * (6 if by_score else 5),
    ]
    for r in sweep.itertuples(index=False):
        mark = (
            " (configured)"
            if configured is not None and float(r.percentile) == float(configured)
            else ""
        )
        rates = " | ".join(_rate(v) for v in (r.precision, r.recall, r.f1))
        score = f"{r.score} | " if by_score else ""
        lines.append(f"| {score}{r.percentile:g}{mark} | {rates} | {int(r.n_flagged)} |")
    if sweep[["precision", "recall"]].isna().all().all():
        lines += ["", f"{MISSING}: no planted labels, so precision and recall are undefined."]
    return lines


def _detection_body(
    detection: Mapping[str, Any], sweep: pd.DataFrame | None = None, depth: int = 3
) -> list[str]:
    """One replicate's detection quality; `depth`: the level of its sub-headings."""
    lines: list[str] = []
    if not detection:
        return lines + ["No detection metrics were given.", ""]
    n_tokens, n_planted = detection.get("n_tokens"), detection.get("n_planted")
    counts = (
        f"{detection.get('n_samples')} samples, {n_tokens} scored tokens, "
        f"{detection.get('n_confounders')} flagged as confounders"
    )
    if not n_planted:
        # A real corpus has no planted distractors: precision and recall have nothing to count.
        lines += [
            counts + ". The corpus has no planted distractors, so precision and recall against "
            "them are undefined; the flagged tokens are in `detection/inspect.html`."
        ]
    else:
        lines += [
            "Token level: tokens flagged as confounders against tokens of planted distractors.",
            "",
            "| precision | recall | F1 |",
            "|---|---|---|",
            "| "
            + " | ".join(_percent(detection.get(k)) for k in ("precision", "recall", "f1"))
            + " |",
            "",
            counts + f", {n_planted} inside planted distractors.",
        ]
    if n_tokens and n_planted:
        lines.append(
            "Flagging tokens at random would give a precision of about "
            f"{_percent(n_planted / n_tokens)} (the planted share of tokens)."
        )
    means = detection.get("mean_scores") or {}
    if all(means.get(group) for group in ("planted", "other")):
        lines += [
            "",
            "Mean normalised gradient scores of instruction tokens (detection flags the lowest "
            "teacher − student differences, so it can only find planted tokens if their "
            "difference is clearly lower):",
            "",
            "| tokens | teacher | student | difference |",
            "|---|---|---|---|",
        ] + [
            f"| {group} | "
            + " | ".join(f"{means[group][k]:.3f}" for k in ("teacher", "student", "diff"))
            + " |"
            for group in ("planted", "other")
        ]
    settings = detection.get("settings") or {}
    if settings:
        lines += ["", "Settings:", ""] + [f"- `{k}`: {v}" for k, v in settings.items()]
    if sweep is not None and len(sweep):
        uses_percentile = settings.get("strategy", "percentile") == "percentile"
        lines += _sweep_lines(sweep, settings.get("percentile") if uses_percentile else None, depth)
    return lines + [""]


def _pooled_detection_row(detection: Iterable[Mapping[str, Any]]) -> list[str]:
    """The seeds' token counts summed: precision, recall and F1 over every seed's tokens."""
    found = [m for m in detection if m.get("n_planted")]
    if not found:
        return []
    flagged = sum(m["n_confounders"] for m in found)
    planted = sum(m["n_planted"] for m in found)
    hits = sum(round(m["precision"] * m["n_confounders"]) for m in found)
    precision, recall = hits / flagged if flagged else 0.0, hits / planted
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    random_rate = planted / sum(m["n_tokens"] for m in found)
    return [
        f"| pooled | {_percent(precision)} | {_percent(recall)} | {_percent(f1)} | {_percent(random_rate)} |"
    ]


def _detection_section(
    detection: Mapping[int, Mapping[str, Any]],
    sweep: Mapping[int, pd.DataFrame] | None = None,
    extra: Mapping[int, str] | None = None,
) -> list[str]:
    """Detection per seed (each seed detects on its own world and models); with several seeds a
    table of the headline figures first. `extra`: per seed, Markdown that follows its body (the
    score variants, the breakdown by kind of token, the validity check)."""
    sweep, extra = sweep or {}, extra or {}
    lines = ["## Confounder detection", ""]
    if len(detection) <= 1:
        seed = next(iter(detection), None)
        return (
            lines
            + _detection_body(detection.get(seed, {}), sweep.get(seed))
            + [extra.get(seed, "")]
        )
    lines += [
        "Tokens flagged as confounders against tokens of planted distractors, per seed; random: the "
        "precision of flagging tokens at random (the planted share of tokens).",
        "",
        "| seed | precision | recall | F1 | random |",
        "|---|---|---|---|---|",
    ]
    for seed, metrics in detection.items():
        planted, tokens = metrics.get("n_planted"), metrics.get("n_tokens")
        random_rate = planted / tokens if planted and tokens else None
        cells = [
            _percent(metrics.get(k)) if planted else MISSING for k in ("precision", "recall", "f1")
        ]
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {_percent(random_rate)} |")
    lines += _pooled_detection_row(detection.values()) + [""]
    for seed, metrics in detection.items():
        lines += [f"### Seed {seed}", ""] + _detection_body(metrics, sweep.get(seed), depth=4)
        lines += [extra.get(seed, "")]
    return lines


def _summary_frame(
    tables: Tables,
    models: Sequence[str],
    model_labels: Mapping[str, str],
    benchmarks: Sequence[str],
) -> pd.DataFrame:
    """The results table as numbers: mean accuracy across seeds in percent, NaN (an empty cell)
    where missing."""
    records = []
    for model in models:
        cells = _pooled(tables, model, benchmarks)
        record: dict[str, Any] = {"model": model, "label": model_labels.get(model, model)}
        for name, cell in zip([*benchmarks, "Avg"], cells):
            record[name] = math.nan if cell is None else round(100 * cell[0], 2)
        records.append(record)
    return pd.DataFrame.from_records(records, columns=["model", "label", *benchmarks, "Avg"])


def _per_seed_frame(
    tables: Tables, models: Sequence[str], benchmarks: Sequence[str]
) -> pd.DataFrame:
    """Every seed's scores, one row per (seed, model, benchmark): accuracy and Wilson bounds in percent."""
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


def _plot(
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
        for i, cell in enumerate(_pooled(tables, model, benchmarks)[:-1]):
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


def mean_over_seeds(attention: pd.DataFrame) -> pd.DataFrame:
    """The seeds' attention tables (a `seed` column) averaged per model and layer: what the
    attention section shows for several seeds."""
    if "seed" not in attention or attention["seed"].nunique() <= 1:
        return attention.drop(columns="seed", errors="ignore")
    table = attention.drop(columns="seed").assign(layer=attention["layer"].astype(str))
    groups = table.groupby(["model", "layer"], sort=False)
    numeric = list(table.select_dtypes("number").columns)
    other = [c for c in table.columns if c not in numeric and c not in ("model", "layer")]
    return groups[numeric].mean().join(groups[other].first()).reset_index()


def build_report(
    scores: Sequence[Mapping[str, Any]],
    detection: Mapping[int, Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    model_order: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
    notes: str = "",
    baseline: str = "kd",
    candidates: Sequence[str] = ("leaf_instr", "leaf_instr_resp"),
    outcomes: Outcomes | None = None,
    reliance: tuple[str, str] | None = None,
    sweep: Mapping[int, pd.DataFrame] | None = None,
    attention: pd.DataFrame | None = None,
    record: RunRecord | None = None,
    accounting: Sequence[Accounted] = (),
    skipped_steps: Mapping[str, int] | None = None,
    detection_extra: Mapping[int, str] | None = None,
) -> None:
    """Write summary.csv, summary.parquet (the same table), per_seed.csv, paired.csv, summary.md
    and accuracy.png (and attention.png; with `record`, config.yaml, versions.json and timings.csv)
    into `out_dir`, atomically.

    Args:
        scores: `eval/{model}/{benchmark}.scores.json` contents of every seed (each names its
            `seed`). Rows follow `model_order`, columns `benchmark_labels` (id -> label); a
            benchmark whose scores say `available: false` gets no column but its reason under
            "Skipped benchmarks".
        detection: per seed, its `detection/metrics.json`; `sweep` per seed its
            `detection/sweep.csv` (percentile, precision, recall, f1, n_flagged).
        outcomes: (seed, model, benchmark) -> problem id -> solved, from the graded files: the
            paired table (every other model of `model_order` but the teacher and the student,
            against `baseline`) and the verdict on each of `candidates` come from it.
        reliance: (test with distractors, the same test without), two benchmark ids: each
            model's accuracy lost to distractors, paired by problem.
        attention: the `attention/{model}.csv` tables concatenated, with a `seed` column; shown
            averaged over seeds, and in attention.png.
        record: the run's settings, software and timings (files and two sections); `accounting`:
            where each input's rows went (a table, with detection's unscored samples and, given
            `skipped_steps`, the training steps skipped as non-finite). `notes` closes summary.md.
        detection_extra: per seed, Markdown shown after its detection figures.
    """
    out = Path(out_dir)
    skipped = {s["benchmark"]: s["reason"] for s in scores if s.get("available") is False}
    scores = [s for s in scores if s["benchmark"] not in skipped]
    benchmark_labels = {b: label for b, label in benchmark_labels.items() if b not in skipped}
    benchmarks = list(benchmark_labels)
    tables = _index(scores, model_order, benchmarks)
    seeds = list(tables) or sorted(detection)
    frame = _summary_frame(tables, model_order, model_labels, benchmarks)
    with atomic_path(out / "summary.csv") as tmp:
        frame.to_csv(tmp, index=False)
    write_parquet(frame, out / "summary.parquet")
    with atomic_path(out / "per_seed.csv") as tmp:
        _per_seed_frame(tables, model_order, benchmarks).to_csv(tmp, index=False)
    outcomes = outcomes or {}
    compared = [m for m in model_order if m not in ("teacher", "student", baseline)]
    rows = paired_table(outcomes, seeds, benchmarks, baseline, compared)
    paired = pd.DataFrame.from_records([_paired_record(m, baseline, b, r) for m, b, r in rows])
    with atomic_path(out / "paired.csv") as tmp:
        paired.to_csv(tmp, index=False)
    lines = ["# LeaF evaluation summary", ""]
    if len(tables) > 1:
        lines += _seeds_section(tables, model_order, model_labels, benchmark_labels)
    else:
        lines += _accuracy_section(
            next(iter(tables.values()), {}), model_order, model_labels, benchmark_labels
        )
    if skipped:
        lines += [
            "## Skipped benchmarks",
            "",
            "No data was found for these, so they have no column above (not a zero):",
            "",
        ]
        lines += [f"- `{name}`: {reason}" for name, reason in skipped.items()] + [""]
    lines += _paired_section(rows, baseline, model_labels, benchmark_labels)
    lines += _comparison_section(
        rows, baseline, [c for c in candidates if c in compared], model_labels, benchmark_labels
    )
    if reliance is not None and set(reliance) <= set(benchmarks):
        lines += _reliance_section(
            outcomes, seeds, model_order, model_labels, reliance, benchmark_labels
        )
    lines += _detection_section(detection, sweep, detection_extra)
    if accounting:
        lines += accounting_section(accounting)
    if accounting or skipped_steps is not None:
        unscored = {
            (f"seed {seed}, {scope}" if len(detection) > 1 else scope): counts
            for seed, metrics in detection.items()
            for scope, counts in (metrics.get("unscored") or {}).items()
        }
        lines += fault_lines(unscored, skipped_steps or {})
    if attention is not None:
        from leafpipe.report.attention import attention_plot, attention_section

        pooled = mean_over_seeds(attention)
        lines += attention_section(pooled, model_order, model_labels)
        if len(seeds) > 1:
            lines[-1:-1] = ["", f"Averaged over the {len(seeds)} seeds' replicates."]
        attention_plot(pooled, model_order, model_labels, out / "attention.png")
    if record is not None:
        record.write(out)
        lines += record.sections()
    if notes.strip():
        lines += ["## Notes", "", notes.strip(), ""]
    write_text("\n".join(lines), out / "summary.md")
    _plot(tables, model_order, model_labels, benchmark_labels, out / "accuracy.png")
