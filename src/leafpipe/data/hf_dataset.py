"""Rows of any dataset `datasets.load_dataset` can read (a hub id, a local folder, or a builder
such as "parquet" with `data_files`), chosen declaratively: a filter on column values, a seeded
sample in all or per value of a column, and a mapping from the fields a reader expects to the
dataset's columns.

The paper's corpus is such a choice (NuminaMath-CoT, a fixed number of rows drawn per `source`),
which a file read as contiguous rows cannot express. Every row of the split stays accounted
for: it comes back, or it is counted as left out by `filter` or by `sample`; a value of the
sampled column with fewer rows than asked gives all it has, and the shortfall is returned too.

The sample ranks rows by a seeded hash of their content, not by position, so the same rows are
drawn whatever order the files list them in. Torch-free; `datasets` is imported on first use.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leafpipe.evaluation.rows import InputRow
from leafpipe.spec_fields import known_fields

if TYPE_CHECKING:
    from datasets import Dataset

# A hub id ('owner/name' or 'name') or a builder name ("parquet"): not a path to a folder.
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_BATCH = 1024  # rows converted to Python at a time while hashing


class DatasetUnavailable(RuntimeError):
    """The dataset cannot be had here (not in the cache while offline, no such folder); `reason`
    names it and says what to do, for a benchmark's skip reason or the corpus's error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DatasetSpecError(ValueError):
    """A spec that does not fit its dataset: an unknown config, split or column."""


@dataclass(frozen=True)
class Sample:
    """`n` rows in all, or `n` per value of column `by` (dotted: a.b), drawn with `seed`."""

    n: int
    seed: int = 0
    by: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Which rows of which dataset, and under which field names a reader gets them.

    `filter`: column (dotted) -> the value a kept row has there, or a list of allowed values.
    `columns`: field the reader expects -> the dataset's column (dotted) holding it.
    """

    dataset: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    data_files: str | Sequence[str] | Mapping[str, Any] | None = None
    filter: Mapping[str, Any] = field(default_factory=dict)
    sample: Sample | None = None
    columns: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> DatasetSpec:
        """The spec of a config's `dataset:` mapping; an unknown key is an error."""
        values = known_fields(cls, section)
        sample = values.get("sample")
        if sample is not None:
            values["sample"] = Sample(**known_fields(Sample, sample))
        return cls(**values)

    def where(self) -> str:
        """How messages and `InputRow.where` name the split: dataset, config, split, revision."""
        return (
            f"dataset {self.dataset} (config {self.config or 'default'}, split {self.split}, "
            f"revision {self.revision or 'default'})"
        )


@dataclass(frozen=True)
class DatasetRows:
    """The chosen rows in split order, each numbered by its 0-based index in the split, and
    what became of the others: `read` = len(rows) + sum(left_out.values())."""

    source: str
    rows: list[InputRow]
    read: int
    left_out: dict[str, int]  # reason ("filter", "sample") -> rows
    shortfall: dict[str, int]  # "all rows" or "<by>=<value>" -> rows asked for but not there


def field_value(data: Any, dotted: str) -> Any:
    """`a.b.0.c`: keys of objects and indices of lists, so a nested field can be named; None
    when the path leads nowhere."""
    for key in dotted.split("."):
        if isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        elif isinstance(data, Mapping) and key in data:
            data = data[key]
        else:
            return None
    return data


def load_rows(spec: DatasetSpec) -> DatasetRows:
    """The rows `spec` chooses, with the columns it maps renamed, and the accounting of the rest.

    Raises DatasetUnavailable when the data cannot be had (offline and not cached, no such
    folder), DatasetSpecError when the spec names a config, split or column the data lacks.
    """
    split = _load_split(spec)
    _check_columns(spec, split.column_names)
    candidates = _filtered(split, spec.filter)
    chosen, shortfall = (
        (candidates, {}) if spec.sample is None else _sampled(split, candidates, spec.sample)
    )
    where = spec.where()
    rows = [
        InputRow(where, index, index, _renamed(record, spec.columns))
        for index, record in zip(chosen, _records(split, chosen))
    ]
    left_out = {"filter": len(split) - len(candidates), "sample": len(candidates) - len(chosen)}
    return DatasetRows(
        source=where,
        rows=rows,
        read=len(split),
        left_out={reason: n for reason, n in left_out.items() if n},
        shortfall=shortfall,
    )


def _load_split(spec: DatasetSpec) -> Dataset:
    """The split through `datasets.load_dataset` (and its cache)."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    where = spec.where()
    if not Path(spec.dataset).exists() and not _HUB_NAME.match(spec.dataset):
        raise DatasetUnavailable(
            f"{where}: no such folder, and not a hub id or a builder name such as 'parquet'"
        )
    try:
        return datasets.load_dataset(
            spec.dataset,
            spec.config,
            split=spec.split,
            revision=spec.revision,
            data_files=_plain(spec.data_files),
        )
    except (ConnectionError, FileNotFoundError) as err:
        raise DatasetUnavailable(_unavailable(where, spec.dataset, err)) from err
    except DatasetGenerationError as err:  # files that do not make one table, such as a split
        cause = str(err.__cause__ or err).strip().splitlines()[0]  # whose columns differ
        raise DatasetSpecError(
            f"{where}: its files could not be read as one table ({cause}); the splits of one "
            "config must have the same columns"
        ) from err
    except ValueError as err:  # an unknown config or split
        raise DatasetSpecError(f"{where}: {err}") from err


def _plain(data_files: Any) -> Any:
    """data_files as `datasets` takes them: lists and dicts, not the spec's read-only views."""
    if isinstance(data_files, Mapping):
        return {key: _plain(value) for key, value in data_files.items()}
    if isinstance(data_files, (list, tuple)):
        return list(data_files)
    return data_files


def _unavailable(where: str, dataset: str, err: Exception) -> str:
    import datasets

    why = (
        "the hub is off (HF_HUB_OFFLINE=1) and it is not in the local datasets cache"
        if datasets.config.HF_HUB_OFFLINE
        else f"it could not be loaded ({type(err).__name__}: {err})"
    )
    return (
        f"{where}: {why}; load it once online "
        f"(datasets.load_dataset({dataset!r}, ...)) to fill the cache, "
        "or download it and name its local folder in `dataset`"
    )


def _check_columns(spec: DatasetSpec, names: Sequence[str]) -> None:
    """Every column the spec names exists (its first dotted part), so a typo is an error, not an
    empty selection."""
    named = {
        **{column: "filter" for column in spec.filter},
        **{column: f"columns.{target}" for target, column in spec.columns.items()},
    }
    if spec.sample is not None and spec.sample.by is not None:
        named[spec.sample.by] = "sample.by"
    missing = [
        f"{key} {column!r}" for column, key in named.items() if column.split(".")[0] not in names
    ]
    if missing:
        raise DatasetSpecError(
            f"{spec.where()}: {', '.join(missing)}: no such column (it has {', '.join(names)})"
        )


def _column(split: Dataset, dotted: str) -> list[Any]:
    """A (dotted) column's values in split order."""
    top, _, rest = dotted.partition(".")
    values = list(split[top])
    return [field_value(v, rest) for v in values] if rest else values


def _filtered(split: Dataset, wanted: Mapping[str, Any]) -> list[int]:
    """Indices of the rows whose every filtered column holds its value, or one of its list."""
    keep = [True] * len(split)
    for column, allowed in wanted.items():
        options = allowed if isinstance(allowed, list) else [allowed]
        for index, value in enumerate(_column(split, column)):
            keep[index] = keep[index] and value in options
    return [index for index, kept in enumerate(keep) if kept]


def _sampled(
    split: Dataset, candidates: list[int], sample: Sample
) -> tuple[list[int], dict[str, int]]:
    """(chosen indices in split order, shortfall): the `n` candidates of each group (all of them,
    or one per value of `sample.by`) with the smallest seeded content hash."""
    groups: dict[str, list[int]] = {}
    labels = [f"{sample.by}={_label(v)}" for v in _column(split, sample.by)] if sample.by else None
    for index in candidates:
        groups.setdefault(labels[index] if labels else "all rows", []).append(index)
    keys = dict(zip(candidates, _content_keys(_records(split, candidates), sample.seed)))
    chosen: list[int] = []
    for members in groups.values():
        chosen += sorted(members, key=lambda index: (keys[index], index))[: sample.n]
    shortfall = {label: sample.n - len(m) for label, m in groups.items() if len(m) < sample.n}
    return sorted(chosen), shortfall


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _content_keys(records: Iterable[Mapping[str, Any]], seed: int) -> Iterator[bytes]:
    """A seeded hash of each record's content: the rank a sample draws by."""
    salt = f"{seed}\n".encode()
    for record in records:
        content = json.dumps(record, sort_keys=True, default=str).encode()
        yield hashlib.sha256(salt + content).digest()[:8]


def _records(split: Dataset, indices: list[int]) -> Iterator[dict[str, Any]]:
    """The rows at `indices`, in that order, as dicts, a batch at a time."""
    for batch in split.select(indices).iter(batch_size=_BATCH):
        names = list(batch)
        for values in zip(*(batch[name] for name in names)):
            yield dict(zip(names, values))


def _renamed(record: dict[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """The record with each field a reader expects set to the value of its mapped column."""
    return {**record, **{target: field_value(record, source) for target, source in columns.items()}}
