"""Parquet outputs record their inputs; a reader refuses one made from a different input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from leafpipe import stages
from leafpipe.files import fingerprints, provenance
from leafpipe.files.fingerprints import StaleInputError, fingerprint
from leafpipe.files.provenance import read_parquet, recorded, write_parquet


def _frame(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {"sample_id": [f"s{i}" for i in range(n)], "grad_norm": [0.5 * i for i in range(n)]}
    )


def test_record_holds_rows_and_input_fingerprints(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a"}\n')
    out = tmp_path / "scores.parquet"
    write_parquet(_frame(), out, inputs=[corpus])
    assert recorded(out) == {"rows": 3, "inputs": {str(corpus): fingerprint(corpus)}}
    pd.testing.assert_frame_equal(read_parquet(out), _frame())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_hub_id_is_not_recorded(tmp_path: Path) -> None:
    """A model given as a hub id names no file here: scoring with one records the corpus only."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a"}\n')
    out = tmp_path / "scores.parquet"
    write_parquet(_frame(), out, inputs=["Qwen/Qwen2.5-0.5B", corpus])
    assert recorded(out)["inputs"] == {str(corpus): fingerprint(corpus)}


def test_removed_input_is_not_checked(tmp_path: Path) -> None:
    temporary = tmp_path / "shard.parquet"
    write_parquet(_frame(), temporary)
    out = tmp_path / "gathered.parquet"
    write_parquet(_frame(), out, inputs=[temporary])
    temporary.unlink()
    assert len(read_parquet(out, columns=["sample_id"])) == 3


def test_row_count_mismatch_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    table = pa.Table.from_pandas(_frame(2), preserve_index=False)
    pq.write_table(
        table.replace_schema_metadata({provenance.META_KEY: b'{"rows": 5, "inputs": {}}'}), out
    )
    with pytest.raises(StaleInputError, match="holds 2 rows but was written with 5"):
        read_parquet(out)


def test_a_parquet_file_named_otherwise_is_still_checked(tmp_path: Path) -> None:
    source, out = tmp_path / "in.txt", tmp_path / "scores.tmp"
    source.write_text("a")
    write_parquet(_frame(), out, inputs=[source])
    source.write_text("b")
    with pytest.raises(StaleInputError, match="was made from a different"):
        read_parquet(out)


def test_a_frame_reads_back_with_its_types_without_its_index(tmp_path: Path) -> None:
    """The index is not written (rows are identified by columns); pandas' own metadata is kept
    beside the record, so a nullable integer column comes back nullable, not as floats."""
    frame = pd.DataFrame({"n": pd.array([7, None], dtype="Int64"), "s": ["x", "y"]}, index=[5, 3])
    out = tmp_path / "typed.parquet"
    write_parquet(frame, out)
    back = read_parquet(out)
    assert back.index.tolist() == [0, 1] and list(back.columns) == ["n", "s"]
    assert back["n"].dtype == "Int64" and back["n"].tolist() == [7, pd.NA]
    assert list(read_parquet(out, columns=["s"]).columns) == ["s"]


def test_plain_parquet_still_reads(tmp_path: Path) -> None:
    out = tmp_path / "plain.parquet"
    _frame().to_parquet(out, index=False)
    assert recorded(out) == {}
    assert len(read_parquet(out)) == 3


def test_folder_fingerprint_covers_names_and_bytes(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(b"\0" * 100)
    before = fingerprint(model)
    assert fingerprint(model) == before
    (model / "sub" / "weights.bin").write_bytes(b"\0" * 99 + b"\1")
    changed = fingerprint(model)
    assert changed != before
    (model / "sub" / "weights.bin").rename(model / "sub" / "weights2.bin")
    assert fingerprint(model) != changed


def test_large_files_hash_their_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over FULL_HASH_BYTES only the first and last MiB count: documented, and checked here."""
    monkeypatch.setattr(fingerprints, "FULL_HASH_BYTES", 1 << 20)
    big = tmp_path / "big.safetensors"
    data = bytearray(3 << 20)
    big.write_bytes(bytes(data))
    before = fingerprint(big)
    data[(3 << 20) // 2] = 1  # the middle MiB
    big.write_bytes(bytes(data))
    assert fingerprint(big) == before
    data[-1] = 1
    big.write_bytes(bytes(data))
    assert fingerprint(big) != before
    edge = big.with_name("edge.safetensors")  # exactly FULL_HASH_BYTES: still hashed whole
    edge.write_bytes(bytes(data[: 1 << 20]))
    assert fingerprint(edge) == hashlib.sha256(bytes(data[: 1 << 20])).hexdigest()


def test_a_stage_refuses_a_stale_upstream_file(tmp_path: Path) -> None:
    """Scores made from one corpus, the corpus then replaced: gathering them is refused."""
    corpus = tmp_path / "train.jsonl"
    corpus.write_text('{"id": "s0"}\n')
    shard = tmp_path / "shard-0.parquet"
    write_parquet(_frame(), shard, inputs=[corpus])
    corpus.write_text('{"id": "s9"}\n')
    out = tmp_path / "teacher.parquet"
    with pytest.raises(
        StaleInputError, match=f"{shard} was made from a different {corpus}.*rerun the rule"
    ):
        stages.gather_scores([shard], out)
    assert not out.exists()
