"""The issue's done-when: a micro run whose corpus and one benchmark come from a local Parquet
dataset through `datasets` (config, split, filter, a per-column sample), end to end, with the
report's data accounting adding up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import snakemake_runs
import yaml
from report_text import section
from snakemake_runs import MICRO, REPO

DATASET = "config/examples/data/world-dataset"  # its README.md says how it was made
EXAMPLE = REPO / "config" / "examples" / "dataset-corpus.yaml"
SOURCES = ["buys", "loses", "sells"]  # of its eight; 4 rows drawn from each


def _config(tmp_path: Path) -> Path:
    """The micro run, its corpus and its benchmark read from the example dataset."""
    config = yaml.safe_load(MICRO.read_text())
    config["corpus"] = {
        "dataset": {
            "dataset": DATASET,
            "config": "world",
            "split": "train",
            "filter": {"source": SOURCES},
            "sample": {"n": 4, "by": "source", "seed": 1},
            "columns": {"instruction": "problem", "response": "solution", "answer": "answer"},
        },
        "domain": "world",
    }
    test_split = {"dataset": DATASET, "config": "world", "split": "test"}
    config["evaluation"]["benchmarks"] = {
        "dataset_test": {
            "kind": "jsonl",
            "limit": 4,
            "dataset": {**test_split, "columns": {"instruction": "problem"}},
        },
    }
    # Fewer jobs than the micro run's: one scoring shard, two variants, one benchmark.
    config["scoring"]["shards"] = 1
    config["distill"]["variants"] = ["kd", "leaf_instr"]
    path = tmp_path / "dataset-corpus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _accounting_row(summary: str, name: str) -> list[str]:
    table = section(summary, "Data accounting")
    line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.slow
def test_a_dataset_corpus_runs_end_to_end_with_its_rows_accounted(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = snakemake_runs.snakemake(results, configfile=_config(tmp_path), cores=2, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = (results / "report" / "summary.md").read_text()

    _, source, read, kept, skipped, left_out = _accounting_row(summary, "corpus")
    assert "world-dataset (config world, split train" in source
    left_total, reasons = re.fullmatch(r"(\d+) \((.*)\)", left_out).groups()
    by_reason = {r.rsplit(" ", 1)[0]: int(r.rsplit(" ", 1)[1]) for r in reasons.split(", ")}
    assert set(by_reason) == {"filter", "sample"} and int(left_total) == sum(by_reason.values())
    assert int(read) == 600 == int(kept) + int(skipped) + int(left_total)
    assert int(kept) + int(skipped) == 4 * len(SOURCES)

    corpus = (results / "seed-0" / "corpus" / "train.jsonl").read_text().splitlines()
    assert len(corpus) == int(kept)

    _, _, read, kept, skipped, left_out = _accounting_row(summary, "dataset_test")
    assert (int(read), int(kept), int(skipped), left_out) == (200, 4, 0, "196 (limit 196)")


def test_the_shipped_example_builds_its_corpus_and_plans_every_stage(tmp_path: Path) -> None:
    proc = snakemake_runs.snakemake(tmp_path / "results", "-n", configfile=EXAMPLE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for rule in ("corpus", "benchmark_data", "score", "distill", "report"):
        assert f"rule {rule}:" in proc.stdout
    assert "world/distill_train.jsonl" not in proc.stdout.split("rule corpus:")[1].split("rule ")[0]
