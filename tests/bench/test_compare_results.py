"""bench/compare_results.py: the verdicts that decide whether a refactor changed a run's outputs."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parents[2] / "bench" / "compare_results.py"


def load():
    spec = importlib.util.spec_from_file_location("compare_results", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_parquet(path: Path, frame: pd.DataFrame, note: str) -> None:
    table = pa.Table.from_pandas(frame).replace_schema_metadata({"note": note})
    pq.write_table(table, path)


def folders(tmp_path: Path, changed: bool) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "logs").mkdir(parents=True)
    frame = pd.DataFrame({"id": [1, 2], "score": [0.25, 0.5]})
    write_parquet(a / "scores.parquet", frame, "made at 10:00")  # metadata differs, data not
    write_parquet(b / "scores.parquet", frame, "made at 11:00")
    (a / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "seconds": 3.0}))
    (b / "metrics.json").write_text(json.dumps({"accuracy": 0.5 + 0.25 * changed, "seconds": 4}))
    (a / "logs" / "x.log").write_text("started 10:00")
    (b / "logs" / "x.log").write_text("started 11:00")
    (a / "same.txt").write_text("7\n")
    (b / "same.txt").write_text("7\n")
    return a, b


def test_equal_data_with_other_timings_and_metadata_is_the_same(tmp_path, capsys):
    a, b = folders(tmp_path, changed=False)
    assert load().main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "same data   scores.parquet" in out and "same data   metrics.json" in out
    assert "same bytes  same.txt" in out and "x.log" not in out


def test_a_changed_value_or_a_missing_file_is_reported(tmp_path, capsys):
    a, b = folders(tmp_path, changed=True)
    (a / "only.csv").write_text("x\n1\n")
    assert load().main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "differs     metrics.json" in out and "only in A   only.csv" in out
