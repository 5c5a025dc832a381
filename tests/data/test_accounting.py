"""The report's data accounting: rows read = kept + skipped + left out, checked against the
files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from leafpipe.data.accounting import (
    Accounted,
    RowsLostError,
    accounting_section,
    benchmark_accounting,
    corpus_accounting,
)


def _corpus(
    tmp_path: Path, kept: int, skipped: int, info: dict[str, object]
) -> tuple[Path, Path, Path]:
    rows = tmp_path / "train.jsonl"
    rows.write_text("".join(json.dumps({"id": str(i)}) + "\n" for i in range(kept)))
    frame = pd.DataFrame(
        {"file": ["c.jsonl"] * skipped, "line": list(range(skipped)), "reason": ["empty"] * skipped}
    )
    skipped_path = tmp_path / "skipped.parquet"
    frame.to_parquet(skipped_path)
    info_path = tmp_path / "info.json"
    info_path.write_text(json.dumps({"source": "c.jsonl", **info}))
    return info_path, rows, skipped_path


def test_corpus_counts_add_up_with_rows_left_out_by_reason(tmp_path: Path) -> None:
    left_out = {"filter": 2, "sample": 1, "corpus.skip": 1}
    info = {"rows_read": 9, "rows": 3, "skipped": 2, "left_out": left_out}
    files = _corpus(tmp_path, 3, 2, {**info, "shortfall": {"source=c": 2}})
    assert corpus_accounting(*files) == Accounted(
        "corpus", "c.jsonl", 9, 3, 2, left_out, {"source=c": 2}
    )


def test_an_earlier_runs_corpus_info_counts_its_passed_over_rows(tmp_path: Path) -> None:
    files = _corpus(tmp_path, 3, 2, {"rows_read": 9, "rows": 3, "skipped": 2, "passed_over": 4})
    assert corpus_accounting(*files).left_out == {"corpus.skip": 4}


def test_a_row_neither_kept_nor_skipped_is_an_error(tmp_path: Path) -> None:
    files = _corpus(tmp_path, 3, 2, {"rows_read": 6, "rows": 3, "skipped": 2, "passed_over": 0})
    with pytest.raises(RowsLostError, match="6 rows read, but 3 kept"):
        corpus_accounting(*files)


def test_rows_left_out_that_do_not_add_up_are_an_error(tmp_path: Path) -> None:
    """The filter and the sample recorded one row fewer than the split lost."""
    info = {"rows_read": 9, "rows": 3, "skipped": 2, "left_out": {"filter": 2, "sample": 1}}
    with pytest.raises(RowsLostError, match="9 rows read, but 3 kept \\+ 2 skipped \\+ 3 left"):
        corpus_accounting(*_corpus(tmp_path, 3, 2, info))


def test_files_disagreeing_with_the_rule_is_an_error(tmp_path: Path) -> None:
    """A truncated corpus file: the rule recorded 4 rows, the file holds 3."""
    files = _corpus(tmp_path, 3, 0, {"rows_read": 4, "rows": 4, "skipped": 0, "passed_over": 0})
    with pytest.raises(
        RowsLostError, match="hold 3 rows and 0 skipped, but its rule recorded 4 and 0"
    ):
        corpus_accounting(*files)


def test_benchmark_counts_and_unavailable(tmp_path: Path) -> None:
    rows = tmp_path / "gsm8k.jsonl"
    rows.write_text('{"id": "a"}\n{"id": "b"}\n')
    info = tmp_path / "gsm8k.info.json"
    info.write_text(
        json.dumps(
            {
                "available": True,
                "source": "pkg",
                "rows": 2,
                "skipped": [{"row": 3, "reason": "no answer"}],
            }
        )
    )
    assert benchmark_accounting("gsm8k", info, rows) == Accounted("gsm8k", "pkg", 3, 2, 1)
    info.write_text(json.dumps({"available": False, "reason": "no data", "rows": 0, "skipped": []}))
    assert benchmark_accounting("gsm8k", info, rows) is None


def test_a_dataset_benchmark_counts_its_whole_split(tmp_path: Path) -> None:
    rows = tmp_path / "math.jsonl"
    rows.write_text('{"id": "a"}\n')
    info = tmp_path / "math.info.json"
    left_out = {"filter": 5, "sample": 3, "limit": 1}
    info.write_text(
        json.dumps(
            {"source": "ds", "rows": 1, "skipped": [], "rows_read": 10, "left_out": left_out}
        )
    )
    assert benchmark_accounting("math", info, rows) == Accounted("math", "ds", 10, 1, 0, left_out)
    info.write_text(json.dumps({"source": "ds", "rows": 1, "skipped": [], "rows_read": 11}))
    with pytest.raises(RowsLostError, match="11 rows read"):
        benchmark_accounting("math", info, rows)


def test_section_has_a_line_per_input_and_the_reasons_rows_were_left_out() -> None:
    lines = accounting_section(
        [
            Accounted("corpus", "c.jsonl", 9, 3, 2, {"filter": 3, "sample": 1}, {"source=c": 2}),
            Accounted("gsm8k", "pkg", 3, 2, 1),
        ]
    )
    assert "| corpus | `c.jsonl` | 9 | 3 | 2 | 4 (filter 3, sample 1) |" in lines
    assert "| gsm8k | `pkg` | 3 | 2 | 1 | 0 |" in lines
    assert any("corpus: source=c lacked 2" in line for line in lines)


def test_fault_lines_count_unjudged_samples_and_skipped_steps() -> None:
    from leafpipe.data.accounting import fault_lines

    lines = fault_lines(
        {
            "instruction": {"non_finite": 1, "all_equal": 2, "equal_difference": 0},
            "steps": {"non_finite": 0, "all_equal": 0, "equal_difference": 0},
        },
        {"kd": 0, "leaf_instr": 3},
    )
    text = "\n".join(lines)
    assert "instruction: 1 non finite, 2 all equal." in text and "steps:" not in text
    assert "(no update): leaf_instr 3." in text
    assert "could not judge (no confounders flagged there): none." in "\n".join(fault_lines({}, {}))
