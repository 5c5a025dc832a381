"""The pooled report over every seed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from leafpipe.distill.variants import MODEL_LABELS
from leafpipe.distill.variants import variant as variant_record
from leafpipe.files.atomic import read_jsonl

log = logging.getLogger("leafpipe")


def _setting_notes(config: dict[str, Any]) -> str:
    """What the numbers are about; the verdict itself comes from the paired statistics."""
    seeds = ", ".join(map(str, config["seeds"]))
    replicates = (
        f"Replicates: seed(s) {seeds}, each a whole run of its own with that seed (world, "
        "training, sampling); its files are under `seed-<seed>/`. "
    )
    corpus = config["corpus"]
    if corpus["path"]:
        return replicates + f"Distillation corpus: `{corpus['path']}`."
    if corpus.get("benchmark") or corpus.get("hub"):
        return replicates + (
            f"Distillation corpus: rows {corpus['skip']}..{corpus['skip'] + corpus['limit'] - 1} of "
            f"`{corpus.get('benchmark') or corpus.get('hub')}` (rule corpus; `corpus/info.json` says where from)."
        )
    w = config["world"]
    return replicates + (
        "Setting: the embedded confounder world. The student was pre-trained on problems where a "
        f"planted distractor gives the answer away with probability {w['student_shortcut_p']}; "
        "the teacher, the distillation corpus and the test split carry distractors that do not "
        "predict the answer, and the distractor-free test holds the same problems with the "
        "distractors removed. A student that copies distractor numbers fails the first test but "
        f"not the second. Distillation: {config['distill']['epochs']} epoch(s), "
        f"λ = {config['distill']['lam']}, {config['distill']['kd']['kind']} at "
        f"τ = {config['distill']['kd']['temperature']}; detection: "
        f"{config['detection']['percentile']}th percentile, cap {config['detection']['cap']}."
    )


def _split_by_seed(paths: Sequence[Any], seeds: Sequence[int], what: str) -> dict[int, list[Any]]:
    """A seed-major list of inputs (rule report's `seed_major`: every seed's files in turn) as
    each seed's part."""
    if len(paths) % len(seeds):
        raise ValueError(f"{len(paths)} {what} do not split evenly over the seeds {list(seeds)}")
    k = len(paths) // len(seeds)
    return {seed: list(paths[i * k : (i + 1) * k]) for i, seed in enumerate(seeds)}


def _outcomes(
    scores: Sequence[dict[str, Any]], graded: Sequence[str | Path]
) -> dict[tuple[int, str, str], dict[str, bool]]:
    """(seed, model, benchmark) -> problem id -> solved, from the graded files (in the order of
    `scores`). A problem counts as solved when its first sample is, as in the score's `correct`."""
    if len(graded) != len(scores):
        raise ValueError(
            f"{len(graded)} graded files for {len(scores)} scores: they must pair up in order"
        )
    outcomes = {}
    for score, path in zip(scores, graded):
        if score.get("available") is False:
            continue
        first: dict[str, bool] = {}
        for row in read_jsonl(path):
            first.setdefault(str(row["id"]), bool(row["correct"]))
        outcomes[(int(score["seed"]), score["model"], score["benchmark"])] = first
    return outcomes


def _reliance_benchmarks(benchmarks: dict[str, Any]) -> tuple[str, str] | None:
    """The world's test with distractors and the same problems without, when both are evaluated."""
    by_split = {bench.get("split"): name for name, bench in benchmarks.items()}
    return (
        (by_split["test"], by_split["test_clean"])
        if {"test", "test_clean"} <= by_split.keys()
        else None
    )


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
    import dataclasses
    import json

    from leafpipe.data.accounting import benchmark_accounting, corpus_accounting
    from leafpipe.detect import quality
    from leafpipe.prune.validity import markdown_section as validity_section
    from leafpipe.report.build import build_report
    from leafpipe.report.run_record import (
        RunRecord,
        read_benchmarks,
        rule_timings,
        software_versions,
    )

    def read(path: str | Path) -> Any:
        return json.loads(Path(path).read_text(encoding="utf-8"))

    seeds = config["seeds"]
    several = len(seeds) > 1
    loaded = [read(p) for p in scores]
    benchmarks = config["evaluation"]["benchmarks"]
    variants = config["distill"]["variants"]
    split = {
        name: _split_by_seed(paths, seeds, name) if paths else dict.fromkeys(seeds, [])
        for name, paths in (
            ("corpus files", corpus_files),
            ("benchmark files", benchmark_files),
            ("training files", training),
            ("attention tables", attention),
            ("detection tables", detection_tables),
            ("validity summaries", validity),
        )
    }
    accounting, skipped_steps, tables = [], {}, []
    for seed in seeds:
        corpus_seed, bench_files = split["corpus files"][seed], split["benchmark files"][seed]
        found = [corpus_accounting(*corpus_seed)] if corpus_seed else []
        for name, info, rows in zip(benchmarks, bench_files[::2], bench_files[1::2]):
            found += [a for a in [benchmark_accounting(name, info, rows)] if a is not None]
        accounting += [
            dataclasses.replace(a, name=f"{a.name}, seed {seed}") if several else a for a in found
        ]
        for variant, path in zip(variants, split["training files"][seed]):
            skipped_steps[f"{variant} (seed {seed})" if several else variant] = read(path).get(
                "non_finite_steps", 0
            )
        tables += [pd.read_csv(path).assign(seed=seed) for path in split["attention tables"][seed]]
    extra = {
        seed: "\n".join(
            (
                [quality.markdown_section(*split["detection tables"][seed])]
                if split["detection tables"][seed]
                else []
            )
            + (
                [validity_section(split["validity summaries"][seed])]
                if split["validity summaries"][seed]
                else []
            )
        )
        for seed in seeds
    }
    build_report(
        loaded,
        {
            seed: read(paths[0])
            for seed, paths in _split_by_seed(metrics, seeds, "metrics files").items()
        },
        out_dir,
        model_order=["teacher", "student", *variants],
        model_labels=MODEL_LABELS,
        benchmark_labels={name: b.get("label", name) for name, b in benchmarks.items()},
        notes=_setting_notes(config),
        candidates=[v for v in variants if variant_record(v).is_leaf],
        outcomes=_outcomes(loaded, graded) if graded else None,
        reliance=_reliance_benchmarks(benchmarks),
        sweep={
            seed: pd.read_csv(paths[0])
            for seed, paths in _split_by_seed(sweeps, seeds, "sweeps").items()
        }
        if sweeps
        else None,
        attention=pd.concat(tables) if tables else None,
        record=RunRecord(
            config, software_versions(repo), rule_timings(read_benchmarks(timed_jobs or []))
        ),
        accounting=accounting,
        skipped_steps=skipped_steps,
        detection_extra=extra,
    )
    log.info("report written to %s", out_dir)
