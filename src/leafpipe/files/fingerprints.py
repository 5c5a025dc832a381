"""What an output was made from, recorded with it, so that a stale output is refused, not used.

Snakemake decides what to rerun from modification times, which `--touch`, a copied results
folder, or rerunning one rule with `--allowed-rules` can all defeat: a detection table could then
silently pair a new teacher's scores with an old student's, or a distillation train on
counterfactuals cut from an older detection. So every Parquet, JSON or JSON Lines output a stage
writes records its row count and a fingerprint of each input: a Parquet file in its schema
metadata (`leafpipe.files.provenance`), a JSON or JSON Lines file in a sidecar beside it,
`<file>.inputs.json` (`leafpipe.files.atomic`), with the file's own fingerprint, since a sidecar,
unlike metadata, can outlive its file. Reading it checks the row count and that every recorded
input that still exists has the same fingerprint now. An input that no longer exists (a temporary
file Snakemake removed) is not checked; one that names nothing here (a model given as a hub id,
which its revision pins) is not recorded.

A fingerprint is the SHA-256 of a file's bytes. For a folder (a model checkpoint) it covers every
file's relative name, size and bytes, except that files over `FULL_HASH_BYTES` contribute only
their first and last MiB: a 70B checkpoint would otherwise take minutes to hash on every read, and
a re-saved checkpoint changes its safetensors header and its size anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FULL_HASH_BYTES = 64 << 20
_EDGE = 1 << 20
SIDECAR_SUFFIX = ".inputs.json"

PathLike = str | os.PathLike[str]


class StaleInputError(RuntimeError):
    """An output was made from a different version of one of its inputs, or holds other rows
    than were written."""


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


def make_record(inputs: Sequence[PathLike], rows: int | None = None) -> dict[str, Any]:
    """`{"rows": rows, "inputs": {path: fingerprint}}` (no `rows` for a file of one JSON value);
    an input that names nothing here (a hub id) is left out."""
    fingerprints = {str(p): fingerprint(p) for p in inputs if os.path.exists(p)}
    return {"inputs": fingerprints} if rows is None else {"rows": rows, "inputs": fingerprints}


def check_inputs(path: PathLike, record: Mapping[str, Any]) -> None:
    """Refuse `path` when an input its record names still exists with another fingerprint."""
    for source, expected in dict(record.get("inputs", {})).items():
        if os.path.exists(source) and (found := fingerprint(source)) != expected:
            raise StaleInputError(
                f"{path} was made from a different {source} "
                f"(fingerprint {expected[:12]}, now {found[:12]}); "
                f"rerun the rule that makes {path}, e.g. snakemake --forcerun {path}"
            )


def check_rows(path: PathLike, record: Mapping[str, Any], found: int) -> None:
    """Refuse `path` when it holds another number of rows than its record says were written."""
    if "rows" in record and found != record["rows"]:
        raise StaleInputError(f"{path} holds {found} rows but was written with {record['rows']}")


def sidecar(path: PathLike) -> Path:
    """Where a JSON or JSON Lines output's record lives: `<file>.inputs.json` beside it."""
    return Path(f"{os.fspath(path)}{SIDECAR_SUFFIX}")


def check_described(path: PathLike, record: Mapping[str, Any]) -> None:
    """Refuse `path` when it is not the file its sidecar record was written for (`sha256`, the
    file's own fingerprint): a record is published just before its file, so a job killed between
    the two leaves an older file beside a newer record, which would otherwise vouch for it."""
    if "sha256" in record and fingerprint(path) != record["sha256"]:
        raise StaleInputError(
            f"{path} is not the file its record {sidecar(path)} was written for (it was changed "
            f"since, or the job that wrote it was killed); rerun the rule that makes {path}, "
            f"e.g. snakemake --forcerun {path}, or remove the record to read the file as it is"
        )


def read_sidecar(path: PathLike) -> dict[str, Any]:
    """The record beside a JSON or JSON Lines file; empty for a file written without one (a
    user's own data file)."""
    try:
        return dict(json.loads(sidecar(path).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return {}
