"""The final report: the paper's results table, a plain comparison with KD, detection quality.

LeaF's reported gains over distillation without masks are 1-3 points, about the size of
evaluation noise on a few hundred problems. So every number here carries its confidence
interval and sample count, a missing result is shown as missing (never as 0), and the comparison
with the baseline says when a difference is within noise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from leafpipe.atomic_io import atomic_path, write_text
from leafpipe.data_accounting import Accounted, accounting_section, fault_lines
from leafpipe.provenance import write_parquet
from leafpipe.run_record import RunRecord

MISSING = "—"
Key = tuple[str, str]


def _index(
    scores: Sequence[Mapping[str, Any]], models: Sequence[str], benchmarks: Sequence[str]
) -> dict[Key, Mapping[str, Any]]:
    """Scores by (model, benchmark); an unknown or repeated pair is an error, not a silent drop."""
    table: dict[Key, Mapping[str, Any]] = {}
    for score in scores:
        key = (score["model"], score["benchmark"])
        if key[0] not in models or key[1] not in benchmarks:
            raise ValueError(f"score for {key} is outside the report's models or benchmarks")
        if key in table:
            raise ValueError(f"two scores for model {key[0]!r} on benchmark {key[1]!r}")
        table[key] = score
    return table


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


def _overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]


def compare_to_baseline(
    scores: Sequence[Mapping[str, Any]],
    baseline: str = "kd",
    candidates: Sequence[str] = ("leaf_instr", "leaf_instr_resp"),
) -> list[dict[str, Any]]:
    """Per candidate and benchmark: accuracy difference from `baseline` in points and a verdict.

    Non-overlapping 95% intervals are a conservative sign of a real difference; overlapping ones
    mean this evaluation cannot separate the two, which the verdict says as "within noise".
    Benchmarks come in the order they first appear in `scores`; a pair with a missing score is
    kept, with `diff_points` None, so the gap is visible.
    """
    by_key = {(s["model"], s["benchmark"]): s for s in scores}
    benchmarks = list(dict.fromkeys(s["benchmark"] for s in scores))
    rows = []
    for candidate in candidates:
        for benchmark in benchmarks:
            base, cand = by_key.get((baseline, benchmark)), by_key.get((candidate, benchmark))
            row: dict[str, Any] = {
                "candidate": candidate,
                "baseline": baseline,
                "benchmark": benchmark,
                "diff_points": None,
                "ci_overlap": None,
                "verdict": "no score to compare",
            }
            if base is not None and cand is not None:
                diff = 100 * (cand["accuracy"] - base["accuracy"])
                overlap = _overlap(base, cand)
                if overlap:
                    verdict = f"{diff:+.1f} points, within noise (95% CIs overlap)"
                else:
                    direction = "better" if diff > 0 else "worse"
                    verdict = f"{diff:+.1f} points, {direction} (95% CIs do not overlap)"
                row.update(diff_points=diff, ci_overlap=overlap, verdict=verdict)
            rows.append(row)
    return rows


def _cell(score: Mapping[str, Any] | None, show_n: bool) -> str:
    if score is None:
        return MISSING
    text = f"{100 * score['accuracy']:.1f} ± {100 * _half_width(score):.1f}"
    return f"{text} (n={score['n']})" if show_n else text


def _accuracy_section(
    table: Mapping[Key, Mapping[str, Any]],
    models: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
) -> list[str]:
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
        "## Accuracy (%)",
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
    if any_missing:
        lines += [
            "",
            f"{MISSING}: no score for this model and benchmark (not evaluated, or its output is "
            "missing). It is not a zero; a model missing any benchmark has no Avg.",
        ]
    return lines + [""]


def _comparison_section(
    scores: Sequence[Mapping[str, Any]],
    baseline: str,
    candidates: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
) -> list[str]:
    present = {s["model"] for s in scores}
    candidates = [c for c in candidates if c in present]
    lines = ["## Does LeaF help here?", ""]
    if baseline not in present or not candidates:
        missing = f"Not answered: no scores for {baseline!r} and a LeaF model to compare."
        return lines + [missing, ""]
    verdicts = {
        (r["candidate"], r["benchmark"]): r["verdict"]
        for r in compare_to_baseline(scores, baseline, candidates)
    }
    lines += [
        f"Accuracy difference from {model_labels.get(baseline, baseline)}, in points. "
        "Overlapping 95% intervals mean this evaluation cannot tell the two apart, not that "
        "they are equal; non-overlapping ones are a conservative sign of a real difference.",
        "",
        "| Benchmark | " + " | ".join(model_labels.get(c, c) for c in candidates) + " |",
        "|" + "---|" * (len(candidates) + 1),
    ]
    for bench, label in benchmark_labels.items():
        cells = [verdicts.get((c, bench), "no score to compare") for c in candidates]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _percent(value: Any) -> str:
    return MISSING if value is None else f"{100 * value:.1f}%"


def _rate(value: Any) -> str:
    """A share in percent; NaN (nothing to measure against) shows as missing, never as 0."""
    return MISSING if value is None or pd.isna(value) else f"{100 * value:.1f}%"


def _sweep_lines(sweep: pd.DataFrame, configured: Any) -> list[str]:
    """The percentile sweep as a table, the configured percentile (if detection used one) marked."""
    lines = [
        "",
        "### Percentile sweep",
        "",
        "The stored teacher − student differences re-thresholded at other percentiles (same cap and "
        "span limits; instruction tokens). A flat precision near the random rate means no percentile "
        "would help. The configured percentile is marked when detection used the percentile strategy.",
        "",
        "| percentile | precision | recall | F1 | flagged |",
        "|---|---|---|---|---|",
    ]
    for r in sweep.itertuples(index=False):
        mark = " (configured)" if configured is not None and float(r.percentile) == float(configured) else ""
        rates = " | ".join(_rate(v) for v in (r.precision, r.recall, r.f1))
        lines.append(f"| {r.percentile:g}{mark} | {rates} | {int(r.n_flagged)} |")
    if sweep[["precision", "recall"]].isna().all().all():
        lines += ["", f"{MISSING}: no planted labels, so precision and recall are undefined."]
    return lines


def _detection_section(detection: Mapping[str, Any], sweep: pd.DataFrame | None = None) -> list[str]:
    lines = ["## Confounder detection", ""]
    if not detection:
        return lines + ["No detection metrics were given.", ""]
    n_tokens, n_planted = detection.get("n_tokens"), detection.get("n_planted")
    counts = (f"{detection.get('n_samples')} samples, {n_tokens} scored tokens, "
              f"{detection.get('n_confounders')} flagged as confounders")
    if not n_planted:
        # A real corpus has no planted distractors: precision and recall have nothing to count.
        lines += [counts + ". The corpus has no planted distractors, so precision and recall against "
                  "them are undefined; the flagged tokens are in `detection/inspect.html`."]
    else:
        lines += [
            "Token level: tokens flagged as confounders against tokens of planted distractors.",
            "",
            "| precision | recall | F1 |",
            "|---|---|---|",
            "| " + " | ".join(_percent(detection.get(k)) for k in ("precision", "recall", "f1")) + " |",
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
            f"| {group} | " + " | ".join(f"{means[group][k]:.3f}" for k in ("teacher", "student", "diff")) + " |"
            for group in ("planted", "other")
        ]
    settings = detection.get("settings") or {}
    if settings:
        lines += ["", "Settings:", ""] + [f"- `{k}`: {v}" for k, v in settings.items()]
    if sweep is not None and len(sweep):
        uses_percentile = settings.get("strategy", "percentile") == "percentile"
        lines += _sweep_lines(sweep, settings.get("percentile") if uses_percentile else None)
    return lines + [""]


def _summary_frame(
    table: Mapping[Key, Mapping[str, Any]],
    models: Sequence[str],
    model_labels: Mapping[str, str],
    benchmarks: Sequence[str],
) -> pd.DataFrame:
    """The results table as numbers: accuracy in percent, NaN (an empty cell) where missing."""
    records = []
    for model in models:
        row = [table.get((model, bench)) for bench in benchmarks]
        record: dict[str, Any] = {"model": model, "label": model_labels.get(model, model)}
        for bench, score in zip(benchmarks, row):
            record[bench] = math.nan if score is None else round(100 * score["accuracy"], 2)
        avg = _average(row)
        record["Avg"] = math.nan if avg is None else round(100 * avg[0], 2)
        records.append(record)
    return pd.DataFrame.from_records(records, columns=["model", "label", *benchmarks, "Avg"])


def _plot(
    table: Mapping[Key, Mapping[str, Any]],
    models: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
    path: Path,
) -> None:
    """Grouped bars with CI error bars; a missing score is labelled "n/a" so it never reads as 0."""
    benchmarks = list(benchmark_labels)
    fig = Figure(figsize=(max(6.0, 2.0 + 0.35 * len(benchmarks) * len(models)), 4.5))
    ax = fig.subplots()
    width = 0.8 / max(len(models), 1)
    for j, model in enumerate(models):
        for i, bench in enumerate(benchmarks):
            x = i - 0.4 + width * (j + 0.5)
            score = table.get((model, bench))
            if score is None:
                ax.text(x, 1, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
                continue
            acc = 100 * score["accuracy"]
            # Clamped: scores written elsewhere may carry bounds a rounding error past the value.
            low, high = 100 * score["ci_low"], 100 * score["ci_high"]
            err = [[max(0.0, acc - low)], [max(0.0, high - acc)]]
            ax.bar(x, acc, width, yerr=err, capsize=2, color=f"C{j}")
    handles = [Patch(color=f"C{j}", label=model_labels.get(m, m)) for j, m in enumerate(models)]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xticks(range(len(benchmarks)), [benchmark_labels[b] for b in benchmarks])
    ax.set_xlim(-0.5, len(benchmarks) - 0.5)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy with Wilson 95% confidence intervals")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")


def build_report(
    scores: Sequence[Mapping[str, Any]],
    detection: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    model_order: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
    notes: str = "",
    baseline: str = "kd",
    candidates: Sequence[str] = ("leaf_instr", "leaf_instr_resp"),
    sweep: pd.DataFrame | None = None,
    attention: pd.DataFrame | None = None,
    record: RunRecord | None = None,
    accounting: Sequence[Accounted] = (),
    skipped_steps: Mapping[str, int] | None = None,
) -> None:
    """Write summary.csv, summary.parquet (the same table), summary.md and accuracy.png (and
    attention.png; with `record`, config.yaml, versions.json and timings.csv) into `out_dir`, atomically.

    `scores` are `eval/{model}/{benchmark}.scores.json` contents; rows follow `model_order` and
    columns follow `benchmark_labels` (benchmark id -> label). A benchmark whose scores say
    `available: false` gets no column but a line with the reason under "Skipped benchmarks". `sweep` (detection/sweep.csv:
    percentile, precision, recall, f1, n_flagged) goes under detection; `attention` (the
    `attention/{model}.csv` tables concatenated) gets a section and attention.png; `record` (the
    run's settings, software and timings) gets its files and two sections; `accounting` (where
    each input's rows went) a table, with detection's unscored samples and, given `skipped_steps`
    (per variant), the training steps skipped as non-finite. `notes` (the caller's interpretation) closes summary.md.
    """
    out = Path(out_dir)
    skipped = {s["benchmark"]: s["reason"] for s in scores if s.get("available") is False}
    scores = [s for s in scores if s["benchmark"] not in skipped]
    benchmark_labels = {b: label for b, label in benchmark_labels.items() if b not in skipped}
    table = _index(scores, model_order, list(benchmark_labels))
    frame = _summary_frame(table, model_order, model_labels, list(benchmark_labels))
    with atomic_path(out / "summary.csv") as tmp:
        frame.to_csv(tmp, index=False)
    write_parquet(frame, out / "summary.parquet")
    lines = ["# LeaF evaluation summary", ""]
    lines += _accuracy_section(table, model_order, model_labels, benchmark_labels)
    if skipped:
        lines += ["## Skipped benchmarks", "",
                  "No data was found for these, so they have no column above (not a zero):", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in skipped.items()] + [""]
    lines += _comparison_section(scores, baseline, candidates, model_labels, benchmark_labels)
    lines += _detection_section(detection, sweep)
    if accounting:
        lines += accounting_section(accounting)
    if accounting or skipped_steps is not None:
        lines += fault_lines(detection.get("unscored") or {}, skipped_steps or {})
    if attention is not None:
        from leafpipe.attention_report import attention_plot, attention_section

        lines += attention_section(attention, model_order, model_labels)
        attention_plot(attention, model_order, model_labels, out / "attention.png")
    if record is not None:
        record.write(out)
        lines += record.sections()
    if notes.strip():
        lines += ["## Notes", "", notes.strip(), ""]
    write_text("\n".join(lines), out / "summary.md")
    _plot(table, model_order, model_labels, benchmark_labels, out / "accuracy.png")
