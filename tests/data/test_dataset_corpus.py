"""The corpus rule on `corpus.dataset`: rows chosen through `datasets`, checked as a corpus file's
rows are, with every row of the split kept, skipped or counted as left out by reason."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from dataset_folders import use_own_cache, write_dataset

from leafpipe import stages
from leafpipe.config import validate_config
from leafpipe.data.accounting import corpus_accounting
from leafpipe.data.corpus import CorpusError
from leafpipe.data.hf_dataset import DatasetUnavailable
from leafpipe.evaluation.converters import MATH_FORMAT
from leafpipe.files.provenance import recorded

# 10 rows: "alg" has 5 (row 3's solution empty), "geo" 3, "misc" 2 (filtered out).
SOURCES = ["alg"] * 5 + ["geo"] * 3 + ["misc"] * 2
ROWS = [
    {
        "problem": f"Compute {i} times 2.",
        "solution": "" if i == 3 else f"{i} * 2 = {2 * i}.\nThe answer is {2 * i}.",
        "source": source,
    }
    for i, source in enumerate(SOURCES)
]
COLUMNS = {"instruction": "problem", "response": "solution", "origin": "source"}


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_own_cache(monkeypatch, tmp_path / "cache")
    return write_dataset(tmp_path / "ds", {"numbers": {"train": ROWS}})


def _run(tmp_path: Path, dataset: dict, **corpus: object) -> tuple[Path, Path, Path]:
    config = validate_config(
        {"models": {"teacher": {}, "student": {}}, "corpus": {"dataset": dataset, **corpus}}
    )
    out = (tmp_path / "train.jsonl", tmp_path / "info.json", tmp_path / "skipped.parquet")
    stages.corpus(config, *out)
    return out


def _spec(folder: Path, **settings: object) -> dict:
    return {"dataset": str(folder), "config": "numbers", "columns": COLUMNS, **settings}


def test_filtered_sampled_rows_are_checked_and_every_row_accounted(
    folder: Path, tmp_path: Path
) -> None:
    dataset = _spec(
        folder, filter={"source": ["alg", "geo"]}, sample={"n": 4, "by": "source", "seed": 1}
    )
    train, info_path, skipped = _run(tmp_path, dataset, on_invalid="skip", limit=5)
    info = json.loads(info_path.read_text())
    kept = [json.loads(line) for line in train.read_text().splitlines()]
    # alg: 4 of its 5 rows drawn, 1 left out; geo: all 3, one short of 4; misc: filtered out.
    assert info["shortfall"] == {"source=geo": 1} and info["rows_read"] == 10
    assert (info["left_out"]["filter"], info["left_out"]["sample"]) == (2, 1)
    drawn = len(kept) + len(pd.read_parquet(skipped)) + info["left_out"]["corpus.limit"]
    assert len(kept) == 5 and drawn == 7
    accounted = corpus_accounting(info_path, train, skipped)
    assert accounted.read == accounted.kept + accounted.skipped + accounted.left_out_total
    first = kept[0]
    assert set(first) == {"id", "instruction", "response", "origin", "domain"}
    assert first["instruction"].endswith(MATH_FORMAT) and first["domain"] == "math"
    assert first["id"] == f"ds-{ROWS.index(_source_row(first))}"


def _source_row(row: dict) -> dict:
    return next(r for r in ROWS if row["instruction"].startswith(r["problem"]))


def test_a_bad_row_is_skipped_with_its_index_in_the_split(folder: Path, tmp_path: Path) -> None:
    train, info_path, skipped = _run(tmp_path, _spec(folder), on_invalid="skip")
    frame = pd.read_parquet(skipped)
    assert frame[["line", "field", "reason"]].values.tolist() == [[3, "response", "empty"]]
    assert "config numbers, split train" in frame["file"][0]
    assert json.loads(info_path.read_text())["rows"] == 9
    # The skipped rows record the dataset's files, the rule's `local_data` input.
    files = {str(p) for p in folder.rglob("*") if p.is_file()}
    assert files and set(recorded(skipped)["inputs"]) == files


def test_a_bad_row_stops_the_run_naming_the_dataset_and_row(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"split train, revision default\):3: field 'response'"):
        _run(tmp_path, _spec(folder))


def test_skip_and_limit_leave_out_valid_rows_by_reason(folder: Path, tmp_path: Path) -> None:
    _, info_path, _ = _run(
        tmp_path, _spec(folder, filter={"source": "alg"}), on_invalid="skip", skip=1, limit=2
    )
    info = json.loads(info_path.read_text())
    assert info["left_out"] == {"filter": 5, "corpus.skip": 1, "corpus.limit": 1}
    assert (info["rows"], info["skipped"]) == (2, 1)


def test_an_uncached_hub_dataset_offline_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="leafpipe-tests/absent.*HF_HUB_OFFLINE=1"):
        _run(tmp_path, {"dataset": "leafpipe-tests/absent"})
