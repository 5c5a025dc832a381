"""Parquet files that record what they were made from, so a stale one is refused, not used.

Every Parquet file written here carries, in its schema metadata under `leafpipe`, its row count
and a fingerprint of each input (`leafpipe.files.fingerprints`: why, and what a fingerprint
covers); reading it checks the row count and that every recorded input that still exists has the
same fingerprint now.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from leafpipe.files.atomic import atomic_path
from leafpipe.files.fingerprints import (
    PathLike,
    check_inputs,
    check_rows,
    make_record,
    read_sidecar,
)

META_KEY = b"leafpipe"


def write_parquet(frame: pd.DataFrame, path: PathLike, inputs: Sequence[PathLike] = ()) -> None:
    """Write `frame` atomically with its row count and its inputs' fingerprints in the metadata.

    An input that names nothing here (a model or tokenizer given as a hub id, which its revision
    pins) has no bytes to fingerprint and is not recorded, as its rule does not track it.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    record = make_record(inputs, table.num_rows)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), META_KEY: json.dumps(record).encode()}
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _metadata_record(path: PathLike) -> dict[str, Any]:
    """The record in a Parquet file's schema metadata; empty for a file written without one."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata[META_KEY]) if META_KEY in metadata else {}


def recorded(path: PathLike) -> dict[str, Any]:
    """The provenance record of an output: a Parquet file's metadata, another file's sidecar;
    empty for a file written without one."""
    return _metadata_record(path) if str(path).endswith(".parquet") else read_sidecar(path)


def read_parquet(path: PathLike, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file, refusing it when its rows or any input it records has changed.

    An input that no longer exists (a temporary file Snakemake removed) is not checked.
    """
    record = _metadata_record(path)  # whatever the file is named: a Parquet file is read here
    check_inputs(path, record)
    frame = pd.read_parquet(path, columns=list(columns) if columns is not None else None)
    check_rows(path, record, len(frame))
    return frame
