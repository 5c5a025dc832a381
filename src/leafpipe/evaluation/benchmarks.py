"""Evaluation benchmarks from a local file, an installed data package or the Hugging Face hub.

Every source is turned into the same normalised rows (docs/benchmarks.md), and every input row is
either converted or listed in `skipped` with its reason, so a count never shrinks silently. What
each kind is and where its data can come from is its record in `kinds.KINDS`; reading the sources
is `sources`, converting records `converters` (and `leetcode`, `livecodebench`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypedDict

from leafpipe.evaluation.kinds import KINDS
from leafpipe.evaluation.rows import BenchmarkFormatError, BenchmarkRow, InputRow, UnusableRow
from leafpipe.evaluation.sources import choose_origin

BENCHMARK_KINDS = tuple(KINDS)


class SkippedBenchmarkRow(TypedDict):
    row: int | str  # its own id, else its position
    # 1-based line or row number in its source (its order in the benchmark when unnumbered)
    line: int
    reason: str


@dataclass(frozen=True)
class LoadedBenchmark:
    kind: str
    rows: list[BenchmarkRow]
    skipped: list[SkippedBenchmarkRow]
    source: str
    licence: str


def load_benchmark(
    kind: str,
    *,
    path: str | os.PathLike[str] | None = None,
    hub: str | None = None,
    limit: int | None = None,
) -> LoadedBenchmark:
    """Normalised rows of benchmark `kind` (one of BENCHMARK_KINDS).

    A source you name (`path`, or `hub` as 'owner/name:file') is the only one tried, so a run
    never silently uses other data than asked; without one, the shipped package is used, then the
    kind's default hub file. `limit` keeps the first `limit` usable rows in the dataset's order;
    `skipped` then lists the rows skipped before that point. Raises BenchmarkUnavailable when no
    data is there, BenchmarkFormatError for malformed input, ValueError for bad arguments.
    """
    if kind not in KINDS:
        raise ValueError(
            f"unknown benchmark kind {kind!r}; known kinds: {', '.join(BENCHMARK_KINDS)}"
        )
    if path is not None and hub is not None:
        raise ValueError(f"{kind}: give path= or hub=, not both")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{kind}: limit must be a positive integer, got {limit!r}")
    records, source, licence = choose_origin(kind, path, hub)
    rows, skipped = convert_rows(KINDS[kind].convert, records, limit)
    return LoadedBenchmark(kind=kind, rows=rows, skipped=skipped, source=source, licence=licence)


def convert_rows(
    convert: Callable[[InputRow], BenchmarkRow], records: Iterable[InputRow], limit: int | None
) -> tuple[list[BenchmarkRow], list[SkippedBenchmarkRow]]:
    """Convert in order until `limit` rows; a repeated id is an error, since ids key every later
    file."""
    rows: list[BenchmarkRow] = []
    skipped: list[SkippedBenchmarkRow] = []
    first_seen: dict[str, InputRow] = {}
    for record in records:
        if limit is not None and len(rows) >= limit:
            break
        try:
            row = convert(record)
        except UnusableRow as skip:
            line = record.number if record.number is not None else record.index + 1
            skipped.append({"row": record.label(), "line": line, "reason": str(skip)})
            continue
        if row["id"] in first_seen:
            raise BenchmarkFormatError(
                f"{record.where}: row {record.position}: id {row['id']!r} "
                f"repeats row {first_seen[row['id']].position}"
            )
        first_seen[row["id"]] = record
        rows.append(row)
    return rows, skipped
