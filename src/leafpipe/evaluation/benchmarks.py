"""Evaluation benchmarks from a local file, an installed data package or the Hugging Face hub.

Every source is turned into the same normalised rows (docs/benchmarks.md), and every input row is
either converted, listed in `skipped` with its reason, or counted in `left_out` by the reason the
config gave (a date window), so a count never shrinks silently. What each kind is and where its
data can come from is its record in `kinds.KINDS`; reading the sources is `sources`, converting
records `converters` (and `leetcode`, `leetcode_contest`, `livecodebench`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict

from leafpipe.evaluation.kinds import KINDS
from leafpipe.evaluation.rows import BenchmarkFormatError, BenchmarkRow, InputRow, UnusableRow
from leafpipe.evaluation.sources import benchmark_origin

BENCHMARK_KINDS = tuple(KINDS)


class SkippedBenchmarkRow(TypedDict):
    row: int | str  # its own id, else its position
    # its line or row number in its source (InputRow.number: 1-based in a file, the 0-based
    # split index in a dataset; its order in the benchmark when unnumbered)
    line: int
    reason: str


@dataclass(frozen=True)
class LoadedBenchmark:
    """`left_out`: rows the config's window left out, counted by reason; `substitute`: set when
    the rows stand in for the paper's set of that name (the report's column says so)."""

    kind: str
    rows: list[BenchmarkRow]
    skipped: list[SkippedBenchmarkRow]
    source: str
    licence: str
    left_out: dict[str, int] = field(default_factory=dict)
    substitute: str = ""


def load_benchmark(
    kind: str,
    *,
    path: str | os.PathLike[str] | None = None,
    hub: str | None = None,
    limit: int | None = None,
    release: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    revision: str | None = None,
) -> LoadedBenchmark:
    """Normalised rows of benchmark `kind` (one of BENCHMARK_KINDS).

    A source you name (`path`, or `hub` as 'owner/name:file') is the only one tried, so a run
    never silently uses other data than asked; without one, the shipped package is used, then the
    kind's default hub file. A kind published in releases (livecodebench) takes `release` (e.g.
    'release_v4': its files, from the folder `path` or the hub dataset) and a window on its rows'
    dates, `start_date` <= date <= `end_date` ('YYYY-MM-DD', midnight, as lcb_runner compares
    them); rows outside it are counted in `left_out`. `revision` pins hub files (a commit, tag or
    branch). `limit` keeps the first `limit` usable rows in the dataset's order; `skipped` then
    lists the rows skipped before that point. Raises BenchmarkUnavailable when no data is there,
    BenchmarkFormatError for malformed input, ValueError for bad arguments.
    """
    if kind not in KINDS:
        raise ValueError(
            f"unknown benchmark kind {kind!r}; known kinds: {', '.join(BENCHMARK_KINDS)}"
        )
    if path is not None and hub is not None:
        raise ValueError(f"{kind}: give path= or hub=, not both")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{kind}: limit must be a positive integer, got {limit!r}")
    window = DateWindow.parse(kind, start_date, end_date)
    origin = benchmark_origin(kind, path, hub, release=release, revision=revision)
    records, left_out = window.split(kind, origin.rows)
    rows, skipped = convert_rows(KINDS[kind].convert, records, limit)
    return LoadedBenchmark(
        kind=kind,
        rows=rows,
        skipped=skipped,
        source=origin.source,
        licence=origin.licence,
        left_out=left_out,
        substitute=origin.substitute,
    )


@dataclass(frozen=True)
class DateWindow:
    """The rows dated from `start` to `end`, both included, as lcb_runner's date filter keeps
    them: the bounds are midnight of their day, so `end_date` 2024-09-30 keeps a contest of
    2024-09-30T00:00:00 but not one later that day."""

    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def parse(cls, kind: str, start_date: str | None, end_date: str | None) -> DateWindow:
        window = cls(_day(kind, "start_date", start_date), _day(kind, "end_date", end_date))
        if window.start and window.end and window.start > window.end:
            raise ValueError(f"{kind}: start_date {start_date} is after end_date {end_date}")
        if (window.start or window.end) and KINDS[kind].releases is None:
            raise ValueError(f"{kind}: its rows carry no date; start_date/end_date do not apply")
        return window

    def split(self, kind: str, records: list[InputRow]) -> tuple[list[InputRow], dict[str, int]]:
        """(the rows in the window, in order; the others counted by reason)."""
        releases = KINDS[kind].releases
        if releases is None or not (self.start or self.end):
            return records, {}
        kept, left_out = [], Counter[str]()
        for record in records:
            reason = self.outside(releases.date(record))
            if reason is None:
                kept.append(record)
            else:
                left_out[reason] += 1
        return kept, dict(left_out)

    def outside(self, when: datetime) -> str | None:
        """Why a row of this date is left out, or None when it is inside."""
        if self.start is not None and when < self.start:
            return f"dated before start_date {self.start:%Y-%m-%d}"
        if self.end is not None and when > self.end:
            return f"dated after end_date {self.end:%Y-%m-%d}"
        return None


def _day(kind: str, name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise ValueError(f"{kind}: {name} must be a date as YYYY-MM-DD, got {value!r}") from None


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
