"""The final report: the paper's results table, paired comparisons with KD, detection quality.

LeaF's reported gains over distillation without masks are 1-3 points, about the size of
evaluation noise on a few hundred problems, and results move between seeds. So the report pools
replicates (one per seed: its own world, models and test split): accuracies are given as mean ±
sd across seeds beside each seed's own table, every comparison is paired on shared problems
(leafpipe.report.paired_stats) with a bootstrap interval and McNemar's exact test pooled over
seeds, and a difference is called one only when its interval excludes 0. A missing result is
shown as missing, never as 0.

This module writes the files; each section's figures and prose are in its own module
(accuracy, comparisons, detection, attention, generation, kd_settings, run_record).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from leafpipe.data.accounting import Accounted, accounting_section, fault_lines
from leafpipe.files.atomic import atomic_path, write_json, write_text
from leafpipe.files.provenance import write_parquet
from leafpipe.report.accuracy import (
    Tables,
    accuracy_plot,
    accuracy_section,
    index_scores,
    per_seed_frame,
    seeds_section,
    summary_frame,
)
from leafpipe.report.comparisons import (
    Outcomes,
    comparison_section,
    paired_record,
    paired_section,
    paired_table,
    reliance_section,
)
from leafpipe.report.detection import detection_section
from leafpipe.report.generation import generation_section
from leafpipe.report.kd_settings import kd_settings_section
from leafpipe.report.lm_eval_results import lm_eval_results
from leafpipe.report.paired_stats import PairedComparison
from leafpipe.report.run_record import RunRecord


@dataclass(frozen=True)
class _Results:
    """What the accuracy and comparison sections read: the scores by seed, the models in order,
    the benchmarks that have scores, and each compared model's pairing with the baseline."""

    tables: Tables
    seeds: list[int]
    models: Sequence[str]
    model_labels: Mapping[str, str]
    benchmark_labels: Mapping[str, str]  # the benchmarks not skipped
    outcomes: Outcomes
    baseline: str
    compared: list[str]  # set against the baseline: all but the teacher, the student and itself
    rows: list[tuple[str, str, PairedComparison]]  # (model, benchmark, against the baseline)

    @property
    def benchmarks(self) -> list[str]:
        return list(self.benchmark_labels)


def _results(
    scores: Sequence[Mapping[str, Any]],
    skipped: Mapping[str, str],
    detection: Mapping[int, Mapping[str, Any]],
    model_order: Sequence[str],
    model_labels: Mapping[str, str],
    benchmark_labels: Mapping[str, str],
    outcomes: Outcomes | None,
    baseline: str,
) -> _Results:
    """The scores of the benchmarks not skipped, indexed by seed, and the paired table."""
    labels = {b: label for b, label in benchmark_labels.items() if b not in skipped}
    found = [s for s in scores if s["benchmark"] not in skipped]
    tables = index_scores(found, model_order, list(labels))
    seeds = list(tables) or sorted(detection)
    outcomes = outcomes or {}
    compared = [m for m in model_order if m not in ("teacher", "student", baseline)]
    rows = paired_table(outcomes, seeds, list(labels), baseline, compared)
    return _Results(
        tables, seeds, model_order, model_labels, labels, outcomes, baseline, compared, rows
    )


def _write_tables(out: Path, results: _Results) -> None:
    """summary.csv and summary.parquet (the results table), results.json (the same scores shaped
    as lm-evaluation-harness's results), per_seed.csv and paired.csv."""
    models, benchmarks = results.models, results.benchmarks
    frame = summary_frame(results.tables, models, results.model_labels, benchmarks)
    with atomic_path(out / "summary.csv") as tmp:
        frame.to_csv(tmp, index=False)
    write_json(
        lm_eval_results(results.tables, models, results.benchmark_labels), out / "results.json"
    )
    write_parquet(frame, out / "summary.parquet")
    with atomic_path(out / "per_seed.csv") as tmp:
        per_seed_frame(results.tables, models, benchmarks).to_csv(tmp, index=False)
    paired = pd.DataFrame.from_records(
        [paired_record(m, results.baseline, b, r) for m, b, r in results.rows]
    )
    with atomic_path(out / "paired.csv") as tmp:
        paired.to_csv(tmp, index=False)


def _skipped_lines(skipped: Mapping[str, str]) -> list[str]:
    if not skipped:
        return []
    return [
        "## Skipped benchmarks",
        "",
        "No data was found for these, so they have no column above (not a zero):",
        "",
        *(f"- `{name}`: {reason}" for name, reason in skipped.items()),
        "",
    ]


def _results_lines(
    results: _Results,
    skipped: Mapping[str, str],
    candidates: Sequence[str],
    reliance: tuple[str, str] | None,
) -> list[str]:
    """The accuracy tables, the skipped benchmarks, the paired comparisons and verdicts, and the
    reliance on distractors when both of its tests have scores."""
    r = results
    if len(r.tables) > 1:
        lines = seeds_section(r.tables, r.models, r.model_labels, r.benchmark_labels)
    else:
        table = next(iter(r.tables.values()), {})
        lines = accuracy_section(table, r.models, r.model_labels, r.benchmark_labels)
    lines += _skipped_lines(skipped)
    lines += paired_section(r.rows, r.baseline, r.model_labels, r.benchmark_labels)
    leaf = [c for c in candidates if c in r.compared]
    lines += comparison_section(r.rows, r.baseline, leaf, r.model_labels, r.benchmark_labels)
    if reliance is not None and set(reliance) <= set(r.benchmarks):
        lines += reliance_section(
            r.outcomes, r.seeds, r.models, r.model_labels, reliance, r.benchmark_labels
        )
    return lines


def _fault_lines(
    detection: Mapping[int, Mapping[str, Any]],
    accounting: Sequence[Accounted],
    skipped_steps: Mapping[str, int] | None,
) -> list[str]:
    """Where each input's rows went, then detection's unscored samples and the training steps
    skipped as non-finite (each seed's named when there are several)."""
    lines = accounting_section(accounting) if accounting else []
    if accounting or skipped_steps is not None:
        unscored = {
            (f"seed {seed}, {scope}" if len(detection) > 1 else scope): counts
            for seed, metrics in detection.items()
            for scope, counts in (metrics.get("unscored") or {}).items()
        }
        lines += fault_lines(unscored, skipped_steps or {})
    return lines


def _attention_lines(results: _Results, attention: pd.DataFrame, out: Path) -> list[str]:
    """The attention section over the seeds' mean, and attention.png."""
    from leafpipe.report.attention import attention_plot, attention_section, mean_over_seeds

    pooled = mean_over_seeds(attention)
    lines = attention_section(pooled, results.models, results.model_labels)
    if len(results.seeds) > 1:
        lines[-1:-1] = ["", f"Averaged over the {len(results.seeds)} seeds' replicates."]
    attention_plot(pooled, results.models, results.model_labels, out / "attention.png")
    return lines


def _record_lines(record: RunRecord | None, notes: str, out: Path) -> list[str]:
    """The run's record (its files written into `out`, its sections returned), then the notes."""
    lines = []
    if record is not None:
        record.write(out)
        lines += record.sections()
    if notes.strip():
        lines += ["## Notes", "", notes.strip(), ""]
    return lines


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
    training: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
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
        training: per trained model, the training.json of each seed: the loss each was trained
            with (`leafpipe.report.kd_settings`).
    """
    out = Path(out_dir)
    skipped = {s["benchmark"]: s["reason"] for s in scores if s.get("available") is False}
    results = _results(
        scores, skipped, detection, model_order, model_labels, benchmark_labels, outcomes, baseline
    )
    _write_tables(out, results)
    lines = ["# LeaF evaluation summary", ""]
    lines += _results_lines(results, skipped, candidates, reliance)
    lines += detection_section(detection, sweep, detection_extra)
    lines += _fault_lines(detection, accounting, skipped_steps)
    if attention is not None:
        lines += _attention_lines(results, attention, out)
    lines += generation_section(scores, model_order, model_labels)
    lines += kd_settings_section(training or {}, model_labels)
    lines += _record_lines(record, notes, out)
    write_text("\n".join(lines), out / "summary.md")
    accuracy_plot(
        results.tables, model_order, model_labels, results.benchmark_labels, out / "accuracy.png"
    )
