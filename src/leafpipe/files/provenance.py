"""Parquet files that record what they were made from, so a stale one is refused, not used.

Snakemake decides what to rerun from modification times, which `--touch`, a copied results
folder, or rerunning one rule with `--allowed-rules` can all defeat: a detection table could then
silently pair a new teacher's scores with an old student's. Every Parquet file written here
carries, in its schema metadata under `leafpipe`, its row count and a fingerprint of each input;
reading it checks the row count and that every recorded input that still exists has the same
fingerprint now.

A fingerprint is the SHA-256 of a file's bytes. For a folder (a model checkpoint) it covers every
file's relative name, size and bytes, except that files over `FULL_HASH_BYTES` contribute only
their first and last MiB: a 70B checkpoint would otherwise take minutes to hash on every read, and
a re-saved checkpoint changes its safetensors header and its size anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from leafpipe.files.atomic import atomic_path

META_KEY = b"leafpipe"
FULL_HASH_BYTES = 64 << 20
_EDGE = 1 << 20

PathLike = str | os.PathLike[str]


class StaleInputError(RuntimeError):
    """A Parquet file was made from a different version of one of its inputs."""


def _hash_file(digest: "hashlib._Hash", path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: fh.read(_EDGE), b""):
                digest.update(block)
        else:
            digest.update(fh.read(_EDGE))
            fh.seek(size - _EDGE)
            digest.update(fh.read(_EDGE))


def fingerprint(path: PathLike) -> str:
    """SHA-256 of a file, or of a folder's files (names, sizes and bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\0".encode())
            _hash_file(digest, file)
    else:
        _hash_file(digest, path)
    return digest.hexdigest()


def write_parquet(frame: pd.DataFrame, path: PathLike, inputs: Sequence[PathLike] = ()) -> None:
    """Write `frame` atomically with its row count and its inputs' fingerprints in the metadata.

    An input that names nothing here (a model or tokenizer given as a hub id, which its revision
    pins) has no bytes to fingerprint and is not recorded, as its rule does not track it.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    record = {
        "rows": table.num_rows,
        "inputs": {str(p): fingerprint(p) for p in inputs if os.path.exists(p)},
    }
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), META_KEY: json.dumps(record).encode()}
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def recorded(path: PathLike) -> dict[str, object]:
    """The provenance record of a Parquet file; empty for a file written without one."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata[META_KEY]) if META_KEY in metadata else {}


def read_parquet(path: PathLike, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file, refusing it when its rows or any input it records has changed.

    An input that no longer exists (a temporary file Snakemake removed) is not checked.
    """
    record = recorded(path)
    for source, expected in dict(record.get("inputs", {})).items():  # type: ignore[call-overload]
        if os.path.exists(source) and (found := fingerprint(source)) != expected:
            raise StaleInputError(
                f"{path} was made from a different {source} "
                f"(fingerprint {expected[:12]}, now {found[:12]}); "
                f"rerun the rule that makes {path}, e.g. snakemake --forcerun {path}"
            )
    frame = pd.read_parquet(path, columns=list(columns) if columns is not None else None)
    if "rows" in record and len(frame) != record["rows"]:
        raise StaleInputError(
            f"{path} holds {len(frame)} rows but was written with {record['rows']}"
        )
    return frame
