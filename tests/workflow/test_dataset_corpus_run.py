"""The issue's two done-whens in one micro run: a corpus read from a local Parquet dataset through
`datasets` (config, split, filter, a per-column sample) whose rows are chat-format `messages`
with a system prompt, through detection, distillation, evaluation and the report, with the
report's data accounting adding up and the system prompt in no detection scope."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import snakemake_runs
import yaml
from dataset_folders import write_dataset
from report_text import section
from snakemake_runs import MICRO, REPO

from leafpipe.files.atomic import read_jsonl

DATASET = "config/examples/data/world-dataset"  # its README.md says how it was made
EXAMPLE = REPO / "config" / "examples" / "dataset-corpus.yaml"
SOURCES = ["buys", "loses", "sells"]  # of its eight; 4 rows drawn from each
SYSTEM = "Solve the problem step by step."
LEVEL = "instr_resp"


def _chat_dataset(folder: Path) -> Path:
    """The example dataset with its train rows as TRL conversational rows: a system prompt, the
    problem as the user turn, the solution as the assistant's; id, source and answer kept."""
    data = REPO / DATASET / "data"
    train = [
        {
            "id": row["id"],
            "source": row["source"],
            "answer": row["answer"],
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": row["problem"]},
                {"role": "assistant", "content": row["solution"]},
            ],
        }
        for row in pq.read_table(data / "train.parquet").to_pylist()
    ]
    test = pq.read_table(data / "test.parquet").to_pylist()
    # A config's splits share their columns, so the plain test rows are a config of their own.
    return write_dataset(folder, {"chat": {"train": train}, "world": {"test": test}})


def _config(tmp_path: Path) -> Path:
    """The micro run, its corpus and its benchmark read from the chat dataset."""
    dataset = str(_chat_dataset(tmp_path / "chat-dataset"))
    config = yaml.safe_load(MICRO.read_text())
    config["corpus"] = {
        "dataset": {
            "dataset": dataset,
            "config": "chat",
            "split": "train",
            "filter": {"source": SOURCES},
            "sample": {"n": 4, "by": "source", "seed": 1},
            "columns": {"answer": "answer"},
        },
        "domain": "world",
    }
    test_split = {"dataset": dataset, "config": "world", "split": "test"}
    config["evaluation"]["benchmarks"] = {
        "dataset_test": {
            "kind": "jsonl",
            "limit": 4,
            "dataset": {**test_split, "columns": {"instruction": "problem"}},
        },
    }
    # Fewer jobs than the micro run's: one scoring shard, two variants, one benchmark; the
    # teacher's top-k cache, which encodes the samples in its own jobs.
    config["scoring"]["shards"] = 1
    config["distill"] = {
        **config["distill"],
        "variants": ["kd", f"leaf_{LEVEL}"],
        "teacher_topk": 8,
    }
    path = tmp_path / "dataset-corpus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _accounting_row(summary: str, name: str) -> list[str]:
    table = section(summary, "Data accounting")
    line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _check_accounting(summary: str, kept_rows: int) -> None:
    _, source, read, kept, skipped, left_out = _accounting_row(summary, "corpus")
    assert "chat-dataset (config chat, split train" in source
    left_total, reasons = re.fullmatch(r"(\d+) \((.*)\)", left_out).groups()
    by_reason = {r.rsplit(" ", 1)[0]: int(r.rsplit(" ", 1)[1]) for r in reasons.split(", ")}
    assert set(by_reason) == {"filter", "sample"} and int(left_total) == sum(by_reason.values())
    assert int(read) == 600 == int(kept) + int(skipped) + int(left_total)
    assert int(kept) + int(skipped) == 4 * len(SOURCES) and int(kept) == kept_rows

    _, _, read, kept, skipped, left_out = _accounting_row(summary, "dataset_test")
    assert (int(read), int(kept), int(skipped), left_out) == (200, 4, 0, "196 (limit 196)")


def _check_system_prompt(seed: Path, corpus: list[dict]) -> None:
    """The system prompt reaches every corpus and counterfactual row, and no scored token or
    detected span lies in it."""
    assert all(r["system"] == SYSTEM for r in corpus) and "messages" not in corpus[0]
    by_id = {r["id"]: r for r in corpus}
    scores = pd.read_parquet(seed / "scores" / "teacher.parquet")
    assert set(scores["part"]) == {"instruction", "response"}
    scored = scores.groupby(["sample_id", "part"], sort=False)["token"].agg("".join)
    assert all(text == by_id[row_id][part] for (row_id, part), text in scored.items())
    tokens = pd.read_parquet(seed / "detection" / "tokens.parquet")
    spans = [(r, s) for r, s in zip(tokens["id"], tokens["spans"]) for s in json.loads(s)]
    assert spans, "detection found confounders"
    for row_id, span in spans:
        assert span["field"] in ("instruction", "response")
        assert span["end"] <= len(by_id[row_id][span["field"]])
    counterfactuals = read_jsonl(seed / "counterfactuals" / f"{LEVEL}.valid.jsonl")
    assert any(r["kind"] == "counterfactual" for r in counterfactuals)
    assert all(r["system"] == SYSTEM for r in counterfactuals)
    assert (seed / "teacher_logits" / f"{LEVEL}.safetensors").is_file()


@pytest.mark.slow
def test_a_chat_dataset_corpus_runs_end_to_end_with_its_rows_accounted(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = snakemake_runs.snakemake(results, configfile=_config(tmp_path), cores=2, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seed = results / "seed-0"
    corpus = read_jsonl(seed / "corpus" / "train.jsonl")
    _check_accounting((results / "report" / "summary.md").read_text(), len(corpus))
    _check_system_prompt(seed, corpus)
    assert (seed / "models" / f"leaf_{LEVEL}" / "model.safetensors").is_file()


def test_the_shipped_example_builds_its_corpus_and_plans_every_stage(tmp_path: Path) -> None:
    proc = snakemake_runs.snakemake(tmp_path / "results", "-n", configfile=EXAMPLE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for rule in ("corpus", "benchmark_data", "score", "distill", "report"):
        assert f"rule {rule}:" in proc.stdout
    assert "world/distill_train.jsonl" not in proc.stdout.split("rule corpus:")[1].split("rule ")[0]
