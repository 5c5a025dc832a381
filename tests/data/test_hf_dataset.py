"""Rows through `datasets`: local folders with configs and splits, builders with data_files, the
declarative filter, the seeded per-column sample and its shortfall, column mapping, and the
offline error for a hub dataset that is not cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_folders import use_own_cache, write_dataset, write_parquet

from leafpipe.data.hf_dataset import (
    DatasetSpec,
    DatasetSpecError,
    DatasetUnavailable,
    Sample,
    field_value,
    load_rows,
)

# 12 rows: source "a" has 6, "b" 4, "c" 2; meta.level cycles 1, 2, 3.
SOURCES = ["a"] * 6 + ["b"] * 4 + ["c"] * 2
ROWS = [
    {
        "id": f"r{i}",
        "problem": f"What is {i} + 1?",
        "solution": f"{i} + 1 = {i + 1}.",
        "source": source,
        "meta": {"level": i % 3 + 1},
    }
    for i, source in enumerate(SOURCES)
]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_own_cache(monkeypatch, tmp_path / "cache")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    splits = {"train": ROWS, "test": ROWS[:3]}
    return write_dataset(tmp_path / "ds", {"main": splits, "small": {"train": ROWS[:3]}})


def test_a_local_folder_reads_the_named_config_and_split(folder: Path) -> None:
    loaded = load_rows(DatasetSpec(str(folder), config="main", split="test"))
    assert [r.data["id"] for r in loaded.rows] == ["r0", "r1", "r2"]
    assert [r.number for r in loaded.rows] == [0, 1, 2]
    assert loaded.rows[0].where == f"dataset {folder} (config main, split test, revision default)"
    assert (loaded.read, loaded.left_out, loaded.shortfall) == (3, {}, {})
    assert len(load_rows(DatasetSpec(str(folder), config="main")).rows) == 12


def test_builders_read_parquet_and_json_lines_files(tmp_path: Path) -> None:
    parquet = write_parquet(tmp_path / "rows.parquet", ROWS)
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in ROWS[:5]))
    assert load_rows(DatasetSpec("parquet", data_files=str(parquet))).read == 12
    from_json = load_rows(DatasetSpec("json", data_files={"train": [str(jsonl)]}))
    assert [r.data["problem"] for r in from_json.rows] == [r["problem"] for r in ROWS[:5]]


def test_filter_keeps_equal_or_listed_values_and_counts_the_rest(folder: Path) -> None:
    spec = DatasetSpec(str(folder), "main", filter={"source": ["b", "c"], "meta.level": 2})
    loaded = load_rows(spec)
    expected = [r["id"] for r in ROWS if r["source"] in "bc" and r["meta"]["level"] == 2]
    assert [r.data["id"] for r in loaded.rows] == expected == ["r7", "r10"]
    assert loaded.left_out == {"filter": 10}


def test_sample_per_value_is_seeded_and_reports_the_shortfall(folder: Path) -> None:
    def drawn(seed: int) -> list[str]:
        spec = DatasetSpec(str(folder), "main", sample=Sample(n=3, seed=seed, by="source"))
        loaded = load_rows(spec)
        assert loaded.shortfall == {"source=c": 1}
        assert loaded.left_out == {"sample": 12 - 3 - 3 - 2}
        assert len(loaded.rows) + sum(loaded.left_out.values()) == loaded.read
        return [r.data["id"] for r in loaded.rows]

    first = drawn(0)
    by_source = {s: [i for i in first if ROWS[int(i[1:])]["source"] == s] for s in "abc"}
    assert [len(by_source[s]) for s in "abc"] == [3, 3, 2]
    assert first == drawn(0), "the same seed draws the same rows"
    assert first == sorted(first, key=lambda i: int(i[1:])), "drawn rows keep split order"
    assert any(drawn(seed) != first for seed in (1, 2, 3)), "another seed draws others"


def test_sample_does_not_depend_on_row_order(tmp_path: Path) -> None:
    def drawn(rows: list[dict], name: str) -> set[str]:
        path = write_parquet(tmp_path / f"{name}.parquet", rows)
        spec = DatasetSpec("parquet", data_files=str(path), sample=Sample(n=4, seed=7))
        return {r.data["id"] for r in load_rows(spec).rows}

    assert drawn(ROWS, "forward") == drawn(ROWS[::-1], "reversed")


def test_sample_of_more_rows_than_there_are_gives_all_and_the_shortfall(folder: Path) -> None:
    loaded = load_rows(DatasetSpec(str(folder), "small", sample=Sample(n=5)))
    assert len(loaded.rows) == 3 and loaded.shortfall == {"all rows": 2}


def test_columns_give_a_reader_the_fields_it_expects(folder: Path) -> None:
    columns = {"instruction": "problem", "response": "solution", "level": "meta.level"}
    loaded = load_rows(DatasetSpec(str(folder), "main", split="test", columns=columns))
    first = loaded.rows[0].data
    assert (first["instruction"], first["response"], first["level"]) == (
        "What is 0 + 1?",
        "0 + 1 = 1.",
        1,
    )


def test_from_config_builds_the_sample_and_refuses_unknown_keys() -> None:
    spec = DatasetSpec.from_config({"dataset": "x/y", "sample": {"n": 2, "by": "source"}})
    assert spec.sample == Sample(n=2, seed=0, by="source")
    with pytest.raises(TypeError, match="shuffle"):
        DatasetSpec.from_config({"dataset": "x/y", "shuffle": True})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"filter": {"origin": "a"}}, "filter 'origin': no such column"),
        ({"sample": Sample(n=1, by="kind")}, "sample.by 'kind': no such column"),
        ({"columns": {"instruction": "question"}}, "columns.instruction 'question'"),
        ({"split": "validation"}, "split validation.*Unknown split"),
        ({"config": "large"}, "config large.*'large' not found"),
    ],
)
def test_a_spec_that_does_not_fit_its_data_is_an_error_naming_it(
    folder: Path, settings: dict, message: str
) -> None:
    spec = DatasetSpec(str(folder), **{"config": "main", **settings})
    with pytest.raises(DatasetSpecError, match=message):
        load_rows(spec)


def test_splits_with_different_columns_are_an_error_naming_the_dataset(tmp_path: Path) -> None:
    """`datasets` reads a config's splits as one table: a split with other columns cannot be."""
    odd = [{"id": "x", "question": "?"}]
    folder = write_dataset(tmp_path / "ds", {"main": {"train": ROWS, "test": odd}})
    with pytest.raises(DatasetSpecError, match=r"config main, split train.*same columns"):
        load_rows(DatasetSpec(str(folder), config="main"))


def test_an_uncached_hub_dataset_offline_is_unavailable_and_says_what_to_do() -> None:
    """conftest sets HF_HUB_OFFLINE=1 before `datasets` is imported: the hub path, offline."""
    spec = DatasetSpec("leafpipe-tests/no-such-dataset", config="cfg", revision="v1")
    with pytest.raises(DatasetUnavailable) as err:
        load_rows(spec)
    reason = err.value.reason
    assert "dataset leafpipe-tests/no-such-dataset (config cfg, split train, revision v1)" in reason
    assert "HF_HUB_OFFLINE=1" in reason and "fill the cache" in reason


def test_a_missing_local_folder_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="no such folder"):
        load_rows(DatasetSpec(str(tmp_path / "gone" / "data")))


def test_dotted_fields_walk_objects_and_lists() -> None:
    data = {"messages": [{"content": "q"}, {"content": "a"}]}
    assert field_value(data, "messages.1.content") == "a"
    assert field_value(data, "messages.2.content") is None
