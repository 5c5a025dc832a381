"""Local data read by a job is an input of its rule: a dataset folder, a builder's `data_files`,
a benchmark `path` folder (LeetCode templates). Editing one of their files reruns that job and no
other (Snakemake's mtime trigger); a hub dataset is no input at all. Dry runs over outputs that
already exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from dataset_folders import write_dataset, write_parquet
from snakemake_runs import MICRO, snakemake

ROWS = [{"problem": "What is 1 + 1?", "solution": "2", "answer": "2"}]
BEFORE, MADE, EDITED = 1_700_000_000, 1_700_000_100, 1_700_000_200  # mtimes, in this order
OUTPUTS = {  # rule (its wildcard) -> its outputs under a replicate's folder
    "corpus": ["corpus/train.jsonl", "corpus/info.json", "corpus/skipped.parquet"],
    **{
        f"benchmark_data (benchmark={name})": [
            f"eval_data/{name}.jsonl",
            f"eval_data/{name}.info.json",
        ]
        for name in ("local", "leetcode", "hub")
    },
}


def _set_mtime(paths: list[Path], when: int) -> None:
    for path in paths:
        os.utime(path, (when, when))


def _local_data(root: Path) -> dict[str, Path]:
    """The files each job reads, with mtimes before its outputs'."""
    corpus = write_dataset(root / "corpus-data", {"world": {"train": ROWS}})
    templates = root / "templates"
    templates.mkdir()
    (templates / "two_sum.json").write_text("{}")
    files = {
        "corpus": corpus / "data" / "world" / "train.parquet",
        "benchmark_data (benchmark=local)": write_parquet(root / "bench" / "test.parquet", ROWS),
        "benchmark_data (benchmark=leetcode)": templates / "two_sum.json",
    }
    # The folder too: it is the leetcode job's `input_path`, changed by adding a template.
    _set_mtime([corpus / "README.md", templates, *files.values()], BEFORE)
    return files


def _config(tmp_path: Path, files: dict[str, Path]) -> Path:
    """The micro run, its corpus a local dataset folder; benchmarks read with the parquet builder,
    from a LeetCode folder and from a hub dataset."""
    config = yaml.safe_load(MICRO.read_text())
    columns = {"instruction": "problem", "response": "solution"}
    corpus_folder = files["corpus"].parents[2]
    config["corpus"] = {
        "dataset": {"dataset": str(corpus_folder), "config": "world", "columns": columns},
        "domain": "world",
    }
    parquet = files["benchmark_data (benchmark=local)"].parent / "*.parquet"
    config["evaluation"]["benchmarks"] = {
        "local": {
            "kind": "jsonl",
            "dataset": {"dataset": "parquet", "data_files": {"train": str(parquet)}},
        },
        "leetcode": {
            "kind": "leetcode",
            "path": str(files["benchmark_data (benchmark=leetcode)"].parent),
        },
        "hub": {"kind": "jsonl", "dataset": {"dataset": "owner/problems"}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _made(results: Path) -> list[Path]:
    """Every job's outputs, written by hand after its inputs: one target per job."""
    replicate = results / "seed-0"
    for name in [name for names in OUTPUTS.values() for name in names]:
        (replicate / name).parent.mkdir(parents=True, exist_ok=True)
        (replicate / name).write_text("")
        _set_mtime([replicate / name], MADE)
    return [replicate / names[0] for names in OUTPUTS.values()]


def _planned_jobs(results: Path, configfile: Path, targets: list[Path]) -> list[str]:
    """The jobs a dry run plans for `targets`, as `rule (wildcard=value)`, by modification
    times alone: the outputs made by hand have no records for the other triggers to compare."""
    args = ("-n", "--rerun-triggers=mtime", *map(str, targets))
    proc = snakemake(results, *args, configfile=configfile)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = []
    for block in proc.stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        wildcards = next((line for line in block.splitlines() if "wildcards:" in line), "")
        benchmark = wildcards.partition("benchmark=")[2].split(",")[0].strip()
        jobs.append(f"{rule} (benchmark={benchmark})" if benchmark else rule)
    return jobs


@pytest.fixture
def planned(tmp_path: Path):
    files = _local_data(tmp_path)
    results = tmp_path / "results"
    targets = _made(results)
    configfile = _config(tmp_path, files)
    assert _planned_jobs(results, configfile, targets) == []
    return files, lambda: _planned_jobs(results, configfile, targets)


@pytest.mark.parametrize("job", [job for job in OUTPUTS if "hub" not in job])
def test_editing_a_local_data_file_reruns_the_job_that_reads_it(planned, job: str) -> None:
    files, plan = planned
    _set_mtime([files[job]], EDITED)
    assert plan() == [job]
