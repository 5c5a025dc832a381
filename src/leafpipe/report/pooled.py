"""The report pooled over a config's seeds, from the report rule's files.

The rule lists most inputs seed-major (rule report's `seed_major`: every seed's files in turn, in
the order of config["seeds"]); here they are split back into each seed's part, read, and turned
into what `build_report` takes: scores, per-problem outcomes, detection metrics and sweeps, the
attention tables with their seed, the data accounting, the training steps skipped, and each
seed's detection extras (the score variants, the breakdown by kind, the validity check).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from leafpipe.data.accounting import Accounted, benchmark_accounting, corpus_accounting
from leafpipe.distill.variants import MODEL_LABELS
from leafpipe.distill.variants import variant as variant_record
from leafpipe.evaluation.protocols import DEFAULT as DEFAULT_PROTOCOL
from leafpipe.files.atomic import read_json, read_jsonl
from leafpipe.report.build import build_report
from leafpipe.report.detection_variants import variants_section
from leafpipe.report.notes import setting_notes
from leafpipe.report.run_record import RunRecord
from leafpipe.report.validity import validity_section

PathLike = str | Path
PerSeed = Mapping[int, list[Any]]


@dataclass(frozen=True)
class RunFiles:
    """The report rule's inputs (`leafpipe.stages.reporting.report` says what each holds)."""

    scores: Sequence[PathLike]
    metrics: Sequence[PathLike]
    graded: Sequence[PathLike] = ()
    sweeps: Sequence[PathLike] = ()
    attention: Sequence[PathLike] = ()
    corpus_files: Sequence[PathLike] = ()
    benchmark_files: Sequence[PathLike] = ()
    training: Sequence[PathLike] = ()
    detection_tables: Sequence[PathLike] = ()
    validity: Sequence[PathLike] = ()

    def optional(self) -> dict[str, Sequence[PathLike]]:
        """The seed-major inputs a run may leave out, by the name their errors give them."""
        return {
            "corpus files": self.corpus_files,
            "benchmark files": self.benchmark_files,
            "training files": self.training,
            "attention tables": self.attention,
            "detection tables": self.detection_tables,
            "validity summaries": self.validity,
        }


def split_by_seed(paths: Sequence[Any], seeds: Sequence[int], what: str) -> dict[int, list[Any]]:
    """A seed-major list of inputs (rule report's `seed_major`: every seed's files in turn) as
    each seed's part."""
    if len(paths) % len(seeds):
        raise ValueError(f"{len(paths)} {what} do not split evenly over the seeds {list(seeds)}")
    k = len(paths) // len(seeds)
    return {seed: list(paths[i * k : (i + 1) * k]) for i, seed in enumerate(seeds)}


def read_outcomes(
    scores: Sequence[dict[str, Any]], graded: Sequence[PathLike]
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


def column_label(name: str, entry: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    """A benchmark's column header: its label, the protocol that asked it (numbers are comparable
    with a published harness's only under its protocol) and, when its data stands in for the
    benchmark's own (info.json's `substitute`, e.g. a 311-problem subset of MATH-500), that note:
    "<label> [<protocol>] (<substitute>)". `info` is the benchmark's info.json ({} when the
    run has none); its protocol, what the rows were built with, wins over the entry's."""
    protocol = info.get("protocol") or entry.get("protocol") or DEFAULT_PROTOCOL
    label = f"{entry.get('label', name)} [{protocol}]"
    substitute = info.get("substitute")
    return f"{label} ({substitute})" if substitute else label


def benchmark_labels(
    benchmarks: Mapping[str, Mapping[str, Any]], bench_files: Sequence[PathLike]
) -> dict[str, str]:
    """Each benchmark's `column_label`, from one seed's benchmark files (info.json and rows per
    benchmark, in the config's order; none: from the entries alone). Every seed asks a
    benchmark the same way."""
    infos = [read_json(path) for path in bench_files[::2]] or [{}] * len(benchmarks)
    return {
        name: column_label(name, entry, info)
        for (name, entry), info in zip(benchmarks.items(), infos, strict=True)
    }


def reliance_benchmarks(benchmarks: dict[str, Any]) -> tuple[str, str] | None:
    """The world's test with distractors and the same problems without, when both are evaluated."""
    by_split = {bench.get("split"): name for name, bench in benchmarks.items()}
    return (
        (by_split["test"], by_split["test_clean"])
        if {"test", "test_clean"} <= by_split.keys()
        else None
    )


def _seed_accounting(
    benchmarks: Sequence[str], corpus: list[PathLike], bench_files: list[PathLike]
) -> list[Accounted]:
    """Where one seed's corpus and benchmark rows went (a benchmark with no data: left out)."""
    found = [corpus_accounting(*corpus)] if corpus else []
    for name, info, rows in zip(benchmarks, bench_files[::2], bench_files[1::2]):
        found += [a for a in [benchmark_accounting(name, info, rows)] if a is not None]
    return found


def _seed_parts(
    config: dict[str, Any], split: Mapping[str, PerSeed]
) -> tuple[list[Accounted], dict[str, int], list[pd.DataFrame], dict[str, list[Any]]]:
    """Every seed's data accounting, training steps skipped as non-finite (per variant),
    attention tables (with a `seed` column) and training.json per variant; named by seed when
    there are several."""
    seeds, variants = config["seeds"], config["distill"]["variants"]
    several = len(seeds) > 1
    accounting, skipped_steps, tables = [], {}, []
    training: dict[str, list[Any]] = {}
    for seed in seeds:
        found = _seed_accounting(
            list(config["evaluation"]["benchmarks"]),
            split["corpus files"][seed],
            split["benchmark files"][seed],
        )
        accounting += [
            dataclasses.replace(a, name=f"{a.name}, seed {seed}") if several else a for a in found
        ]
        for variant, path in zip(variants, split["training files"][seed]):
            record = read_json(path)
            training.setdefault(variant, []).append(record)
            skipped_steps[f"{variant} (seed {seed})" if several else variant] = record.get(
                "non_finite_steps", 0
            )
        tables += [pd.read_csv(path).assign(seed=seed) for path in split["attention tables"][seed]]
    return accounting, skipped_steps, tables, training


def _detection_extra(split: Mapping[str, PerSeed], seed: int) -> str:
    """A seed's detection by score variant and kind of token, and its validity check."""
    tables, validity = split["detection tables"][seed], split["validity summaries"][seed]
    return "\n".join(
        ([variants_section(*tables)] if tables else [])
        + ([validity_section(validity)] if validity else [])
    )


def write_pooled_report(
    config: dict[str, Any], files: RunFiles, out_dir: PathLike, record: RunRecord
) -> None:
    """`build_report` over every seed's files: the models in the workflow's order, the LeaF
    variants as the candidates, and the config's notes on the setting."""
    seeds, variants = config["seeds"], config["distill"]["variants"]
    benchmarks = config["evaluation"]["benchmarks"]
    loaded = [read_json(p) for p in files.scores]
    split = {
        name: split_by_seed(paths, seeds, name) if paths else dict.fromkeys(seeds, [])
        for name, paths in files.optional().items()
    }
    accounting, skipped_steps, tables, training = _seed_parts(config, split)
    extra = {seed: _detection_extra(split, seed) for seed in seeds}
    metrics = split_by_seed(files.metrics, seeds, "metrics files")
    sweeps = split_by_seed(files.sweeps, seeds, "sweeps") if files.sweeps else None
    build_report(
        loaded,
        {seed: read_json(paths[0]) for seed, paths in metrics.items()},
        out_dir,
        model_order=["teacher", "student", *variants],
        model_labels=MODEL_LABELS,
        benchmark_labels=benchmark_labels(benchmarks, split["benchmark files"][seeds[0]]),
        notes=setting_notes(config),
        candidates=[v for v in variants if variant_record(v).is_leaf],
        outcomes=read_outcomes(loaded, files.graded) if files.graded else None,
        reliance=reliance_benchmarks(benchmarks),
        sweep={seed: pd.read_csv(paths[0]) for seed, paths in sweeps.items()} if sweeps else None,
        attention=pd.concat(tables) if tables else None,
        record=record,
        accounting=accounting,
        skipped_steps=skipped_steps,
        detection_extra=extra,
        training=training,
    )
