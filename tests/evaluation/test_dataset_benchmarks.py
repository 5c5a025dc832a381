"""A benchmark entry that names `dataset:`: its rows through `datasets`, converted by its kind's
converter, with the split's left-out rows in its info; an uncached hub dataset offline is
skipped with its reason, never scored."""

from __future__ import annotations

from pathlib import Path

import pytest
from dataset_folders import use_own_cache, write_dataset

from leafpipe.evaluation.registry import benchmark_rows

# GSM8K's layout under other names: 6 "easy" rows (row 2 has no final answer), 2 "hard".
ROWS = [
    {
        "q": f"Ann has {i} pens and buys 2. How many now?",
        "sol": f"{i} + 2 = {i + 2}" + ("" if i == 2 else f"\n#### {i + 2}"),
        "level": "easy" if i < 6 else "hard",
    }
    for i in range(8)
]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_own_cache(monkeypatch, tmp_path / "cache")
    return write_dataset(tmp_path / "pens", {"default": {"test": ROWS}})


def _entry(folder: Path, **settings: object) -> dict:
    dataset = {
        "dataset": str(folder),
        "split": "test",
        "filter": {"level": "easy"},
        "columns": {"question": "q", "answer": "sol"},
        **settings,
    }
    return {"kind": "gsm8k", "dataset": dataset, "limit": 3}


def test_rows_are_converted_by_the_kind_and_the_split_accounted(folder: Path) -> None:
    rows, info = benchmark_rows(_entry(folder), None)
    assert [row["answer"] for row in rows] == ["2", "3", "5"]
    assert rows[0]["instruction"].startswith("Ann has 0 pens") and rows[0]["task"] == "math"
    assert [s["line"] for s in info["skipped"]] == [2]
    assert info["rows_read"] == 8 and info["left_out"] == {"filter": 2, "limit": 2}
    assert info["rows_read"] == info["rows"] + len(info["skipped"]) + sum(info["left_out"].values())
    assert "split test" in info["source"]


def test_a_sample_is_drawn_before_the_limit(folder: Path) -> None:
    _, info = benchmark_rows(_entry(folder, sample={"n": 4, "seed": 3}), None)
    assert info["left_out"]["sample"] == 2 and info["left_out"]["filter"] == 2
    assert info["rows"] + len(info["skipped"]) + info["left_out"].get("limit", 0) == 4


def test_an_uncached_hub_dataset_offline_is_unavailable_with_its_reason() -> None:
    entry = {"kind": "math500", "dataset": {"dataset": "leafpipe-tests/absent", "split": "test"}}
    rows, info = benchmark_rows(entry, None)
    assert rows == [] and info["available"] is False
    assert "leafpipe-tests/absent" in info["reason"] and "HF_HUB_OFFLINE=1" in info["reason"]
