"""The report's paired comparisons: each model against KD w/o mask on the same problems, the
verdict on each LeaF variant, and each model's reliance on the world's distractors.

LeaF's reported gains are about the size of evaluation noise, so every comparison is paired on
shared problems (leafpipe.report.paired_stats), pooled over seeds, and a difference is called one
only when its bootstrap interval excludes 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from leafpipe.report.accuracy import MISSING, Key
from leafpipe.report.paired_stats import PairedComparison, align, paired_comparison

# (seed, model, benchmark) -> problem id -> solved (its first sample, as the score's `correct`)
Outcomes = Mapping[tuple[int, str, str], Mapping[str, bool]]
# What the world's distractors should do (issue #15): the student loses at least this many points
# to them, the teacher at most this many.
STUDENT_RELIANCE, TEACHER_RELIANCE = 15.0, 3.0


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


def paired_record(model: str, baseline: str, bench: str, r: PairedComparison) -> dict[str, Any]:
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


def paired_section(
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
        f"Each variant against {base} on the same problems, pooled over seeds: "
        "the accuracy difference in points; "
        "its 95% interval from a paired bootstrap (problems resampled within each seed); "
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
            f"| {model_labels.get(model, model)} | {benchmark_labels.get(bench, bench)} | "
            f"{_points(r.diff)} | "
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
    return (
        f"- {label} on {bench}: {stats}: no difference from {base} that this run can tell "
        f"(the CI includes 0{mdd})."
    )


def comparison_section(
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


def reliance_section(
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
        f"Accuracy on {benchmark_labels.get(test, test)} minus accuracy on the same problems "
        "without "
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
