"""JSON and JSON Lines outputs record their inputs in a sidecar; a reader refuses one made from a
different input, and reads a file without a sidecar as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leafpipe.files.atomic import read_json, read_jsonl, write_json, write_jsonl
from leafpipe.files.fingerprints import SIDECAR_SUFFIX, StaleInputError, fingerprint, sidecar
from leafpipe.files.provenance import recorded

RULES = Path(__file__).resolve().parents[2] / "workflow" / "rules"
ROWS = [{"id": "a"}, {"id": "b"}]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": "a"}\n')
    return path


def test_jsonl_records_its_rows_and_inputs_beside_it(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "instr.jsonl"
    assert write_jsonl(ROWS, out, inputs=[corpus]) == 2
    assert sidecar(out) == tmp_path / "instr.jsonl.inputs.json"
    assert recorded(out) == {
        "rows": 2,
        "inputs": {str(corpus): fingerprint(corpus)},
        "sha256": fingerprint(out),
    }
    assert read_jsonl(out) == ROWS
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "instr.jsonl",
        "instr.jsonl.inputs.json",
        "train.jsonl",
    ]  # no temporary left


def test_a_changed_input_is_refused_by_both_readers(tmp_path: Path, corpus: Path) -> None:
    rows, metrics = tmp_path / "instr.jsonl", tmp_path / "metrics.json"
    write_jsonl(ROWS, rows, inputs=[corpus])
    write_json({"precision": 0.5}, metrics, inputs=[corpus])
    assert read_json(metrics) == {"precision": 0.5}
    assert recorded(metrics) == {
        "inputs": {str(corpus): fingerprint(corpus)},
        "sha256": fingerprint(metrics),
    }
    corpus.write_text('{"id": "z"}\n')
    for out, read in ((rows, read_jsonl), (metrics, read_json)):
        with pytest.raises(StaleInputError, match=f"{out} was made from a different {corpus} "):
            read(out)


def test_a_record_reads_as_utf_8_in_an_ascii_locale(tmp_path: Path) -> None:
    """A record names its inputs by path, which may hold any character: it is read as UTF-8
    whatever the reader's locale (here ASCII: LANG=C without Python's coercion to UTF-8)."""
    out = tmp_path / "out.json"
    record = {"inputs": {"café.jsonl": "ab"}}
    sidecar(out).write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    ascii_locale = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    code = (
        "import sys\n"
        "from leafpipe.files.fingerprints import read_sidecar\n"
        "print(ascii(read_sidecar(sys.argv[1])))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        env=ascii_locale,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout == ascii(record) + "\n"


def test_a_file_without_a_sidecar_reads_as_before(tmp_path: Path) -> None:
    """A user's own data file, or one written before records existed."""
    data = tmp_path / "mine.jsonl"
    data.write_text('{"id": "a"}\n\n{"id": "b"}\n')
    assert recorded(data) == {}
    assert read_jsonl(data) == ROWS


def test_rows_other_than_written_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "instr.jsonl"
    write_jsonl(ROWS, out, inputs=[])
    with out.open("a") as fh:
        fh.write('{"id": "c"}\n')
    with pytest.raises(StaleInputError, match="holds 3 rows but was written with 2"):
        read_jsonl(out)


def test_a_record_vouches_only_for_the_file_it_was_written_for(tmp_path: Path) -> None:
    """The record is published just before its file: a job killed between the two leaves the
    older file beside the newer record, which must not pass for current. So must a file edited
    since (same rows, other bytes)."""
    out = tmp_path / "instr.jsonl"
    write_jsonl(ROWS, out, inputs=[])
    older = out.read_bytes()
    write_jsonl([{"id": "c"}, {"id": "d"}], out, inputs=[])
    out.write_bytes(older)
    with pytest.raises(StaleInputError, match=f"{out} is not the file its record .* was written"):
        read_jsonl(out)
    metrics = tmp_path / "metrics.json"
    write_json({"precision": 0.5}, metrics, inputs=[])
    metrics.write_text('{"precision": 0.9}\n')
    with pytest.raises(StaleInputError, match="is not the file its record"):
        read_json(metrics)


def test_a_hub_id_or_a_removed_input_is_not_checked(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "scores.json"
    write_json({}, out, inputs=["Qwen/Qwen2.5-0.5B", corpus])
    assert recorded(out)["inputs"] == {str(corpus): fingerprint(corpus)}
    corpus.unlink()  # a temporary file Snakemake removed
    assert read_json(out) == {}


def test_a_write_without_inputs_removes_an_earlier_record(tmp_path: Path, corpus: Path) -> None:
    """Else the earlier record would describe, and refuse, a file it was not written with."""
    out = tmp_path / "instr.jsonl"
    write_jsonl(ROWS, out, inputs=[corpus])
    write_jsonl(ROWS[:1], out)
    assert not sidecar(out).exists()
    assert read_jsonl(out) == ROWS[:1]


def test_no_rule_output_ends_like_a_sidecar() -> None:
    """A sidecar must never be taken for, or overwrite, an output a rule declares."""
    for smk in RULES.glob("*.smk"):
        assert SIDECAR_SUFFIX not in smk.read_text(), smk
