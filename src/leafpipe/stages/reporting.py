"""The pooled report over every seed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leafpipe.stages.common import log


def report(
    config: dict[str, Any],
    scores: Sequence[str | Path],
    metrics: Sequence[str | Path],
    out_dir: str | Path,
    graded: Sequence[str | Path] = (),
    sweeps: Sequence[str | Path] = (),
    attention: Sequence[str | Path] = (),
    timed_jobs: list[dict[str, Any]] | None = None,
    repo: str | Path | None = None,
    corpus_files: Sequence[str | Path] = (),
    benchmark_files: Sequence[str | Path] = (),
    training: Sequence[str | Path] = (),
    detection_tables: Sequence[str | Path] = (),
    validity: Sequence[str | Path] = (),
) -> None:
    """Build the report pooled over the config's seeds: accuracy (mean ± sd across seeds, and each
    seed's), paired comparisons with KD w/o mask, reliance on distractors, detection quality, plots.

    Every list but `scores` and `graded` is seed-major (rule report's `seed_major`): the seeds'
    files in turn, in the order of config["seeds"]. `scores` are every seed's score files (each
    names its seed) and `graded` the graded files in the same order; `metrics` and `sweeps` each
    seed's detection metrics and sweep; `attention` each seed's attention tables, in model order.
    Beside them the run's record: `config`, the software versions (with `repo`'s git commit) and
    per-rule timings of `timed_jobs` (the jobs' benchmark files and GPU counts, as
    `run_record.benchmark_jobs` lists them). `corpus_files` (the corpus rule's info, rows and
    skipped rows) and `benchmark_files` (each benchmark's info and rows, in benchmark order) give
    the data accounting; `training` (each variant's training.json, in variant order) the steps
    skipped as non-finite. `detection_tables` (each seed's detection/variants.csv and
    by_kind.csv) and `validity` (each seed's counterfactuals/{level}.validity.json, in level
    order) join each seed's detection section.
    """
    from leafpipe.report.pooled import RunFiles, write_pooled_report
    from leafpipe.report.run_record import (
        RunRecord,
        read_benchmarks,
        rule_timings,
        software_versions,
    )
    from leafpipe.tracking.plans import log_evaluation

    files = RunFiles(
        scores=scores,
        metrics=metrics,
        graded=graded,
        sweeps=sweeps,
        attention=attention,
        corpus_files=corpus_files,
        benchmark_files=benchmark_files,
        training=training,
        detection_tables=detection_tables,
        validity=validity,
    )
    timings = rule_timings(read_benchmarks(timed_jobs or []))
    write_pooled_report(config, files, out_dir, RunRecord(config, software_versions(repo), timings))
    log.info("report written to %s", out_dir)
    # Each model's scores per seed to report_to's trackers (leafpipe.tracking.plans: why here).
    log_evaluation(config, scores, Path(out_dir) / "tensorboard")
