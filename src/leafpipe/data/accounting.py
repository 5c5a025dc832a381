"""Where every input row went (kept, skipped with a reason, or left out by the config), and
which numbers a numerical fault kept out.

The report shows one line per data boundary (the corpus, each benchmark) and refuses to be
written when the files disagree with what their rule recorded: a row that is neither kept nor
skipped is a bug, and a report built on it would hide that. Samples that detection could not
judge and training steps skipped for a non-finite loss or gradient are counted beside them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from leafpipe.files.atomic import read_json

PathLike = str | os.PathLike[str]


class RowsLostError(RuntimeError):
    """An input's rows do not add up: read ≠ kept + skipped + left out."""


@dataclass(frozen=True)
class Accounted:
    name: str
    source: str
    read: int
    kept: int
    skipped: int
    # Rows left out on purpose, by reason: corpus.skip (the rows evaluation uses), corpus.limit,
    # a dataset's filter and sample, a benchmark's limit.
    left_out: Mapping[str, int] = field(default_factory=dict)
    # Rows a dataset's sample asked for but did not find, by group ("source=amc_aime").
    shortfall: Mapping[str, int] = field(default_factory=dict)

    @property
    def left_out_total(self) -> int:
        return sum(self.left_out.values())


def _lines(path: PathLike) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def _checked(entry: Accounted, recorded_kept: int, recorded_skipped: int) -> Accounted:
    if (entry.kept, entry.skipped) != (recorded_kept, recorded_skipped):
        raise RowsLostError(
            f"{entry.name}: its files hold {entry.kept} rows and {entry.skipped} skipped, "
            f"but its rule recorded {recorded_kept} and {recorded_skipped}"
        )
    if entry.read != entry.kept + entry.skipped + entry.left_out_total:
        raise RowsLostError(
            f"{entry.name}: {entry.read} rows read, but {entry.kept} kept + "
            f"{entry.skipped} skipped + {entry.left_out_total} left out"
        )
    return entry


def corpus_accounting(
    info_path: PathLike, corpus_path: PathLike, skipped_path: PathLike
) -> Accounted:
    """The corpus rule's counts, checked against its output files."""
    info = read_json(info_path)
    entry = Accounted(
        "corpus",
        str(info["source"]),
        int(info["rows_read"]),
        _lines(corpus_path),
        pq.read_metadata(skipped_path).num_rows,
        _left_out(info),
        dict(info.get("shortfall", {})),
    )
    return _checked(entry, int(info["rows"]), int(info["skipped"]))


def _left_out(info: Mapping[str, Any]) -> dict[str, int]:
    """The corpus's left-out rows by reason; an earlier run's info.json has one number, the rows
    corpus.skip passed over."""
    if "left_out" not in info:
        return {"corpus.skip": int(info["passed_over"])} if info["passed_over"] else {}
    return {reason: int(n) for reason, n in info["left_out"].items()}


def benchmark_accounting(name: str, info_path: PathLike, rows_path: PathLike) -> Accounted | None:
    """A benchmark's counts, checked against its rows file; None for a benchmark with no data (the
    report lists it as skipped with its reason). A benchmark read from a file reads rows only up
    to its limit; one read through `datasets` reads its whole split and records the rows its
    filter, sample and limit left out."""
    info: Mapping[str, Any] = read_json(info_path)
    if info.get("available") is False:
        return None
    kept, skipped = int(info["rows"]), len(info["skipped"])
    entry = Accounted(
        name,
        str(info.get("source", "")),
        int(info.get("rows_read", kept + skipped)),
        _lines(rows_path),
        skipped,
        {reason: int(n) for reason, n in info.get("left_out", {}).items()},
        dict(info.get("shortfall", {})),
    )
    return _checked(entry, kept, skipped)


def accounting_section(entries: Sequence[Accounted]) -> list[str]:
    lines = [
        "## Data accounting",
        "",
        "Every row read is kept, skipped with its reason (`corpus/skipped.parquet`; a benchmark's "
        "`eval_data/<name>.info.json`), or left out by the config, by reason (`corpus.skip`: the "
        "rows evaluation uses; `corpus.limit`; a dataset's `filter` and `sample`; a benchmark's "
        "`limit`). A benchmark read from a file reads rows only up to its `limit`; one read "
        "through `datasets` reads its whole split.",
        "",
        "| input | source | rows read | kept | skipped | left out |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {e.name} | `{e.source}` | {e.read} | {e.kept} | {e.skipped} | {_left_out_cell(e)} |"
        for e in entries
    ]
    short = [f"{e.name}: {group} lacked {n}" for e in entries for group, n in e.shortfall.items()]
    if short:
        lines += ["", f"Samples short of rows (all of a group's rows kept): {'; '.join(short)}."]
    return lines + [""]


def _left_out_cell(entry: Accounted) -> str:
    """`12 (filter 5, sample 7)`: the total, then each reason that left rows out."""
    reasons = ", ".join(f"{reason} {n}" for reason, n in entry.left_out.items() if n)
    return f"{entry.left_out_total} ({reasons})" if reasons else "0"


def fault_lines(
    unscored: Mapping[str, Mapping[str, int]], skipped_steps: Mapping[str, int]
) -> list[str]:
    """`unscored`: detection's per-scope counts of samples it could not judge (metrics.json);
    `skipped_steps`: per distilled variant, optimiser steps skipped as non-finite
    (training.json)."""
    lines = ["### Numerical faults", ""]
    judged = [
        f"{scope}: "
        + ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in counts.items() if n)
        for scope, counts in unscored.items()
        if any(counts.values())
    ]
    lines.append(
        "Samples detection could not judge (no confounders flagged there): "
        + ("; ".join(judged) if judged else "none")
        + "."
    )
    steps = [f"{variant} {n}" for variant, n in skipped_steps.items() if n]
    lines.append(
        "Training steps skipped for a non-finite loss or gradient (no update): "
        + (", ".join(steps) if steps else "none")
        + "."
    )
    return lines + [""]
