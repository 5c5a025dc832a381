"""Where every input row went (kept, skipped with a reason, or left out by the config), and
which numbers a numerical fault kept out.

The report shows one line per data boundary (the corpus, each benchmark) and refuses to be
written when the files disagree with what their rule recorded: a row that is neither kept nor
skipped is a bug, and a report built on it would hide that. Samples that detection could not
judge and training steps skipped for a non-finite loss or gradient are counted beside them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

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
    left_out: int  # passed over on purpose (corpus.skip: the rows evaluation uses)


def _lines(path: PathLike) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def _checked(entry: Accounted, recorded_kept: int, recorded_skipped: int) -> Accounted:
    if (entry.kept, entry.skipped) != (recorded_kept, recorded_skipped):
        raise RowsLostError(
            f"{entry.name}: its files hold {entry.kept} rows and {entry.skipped} skipped, "
            f"but its rule recorded {recorded_kept} and {recorded_skipped}"
        )
    if entry.read != entry.kept + entry.skipped + entry.left_out:
        raise RowsLostError(
            f"{entry.name}: {entry.read} rows read, but {entry.kept} kept + "
            f"{entry.skipped} skipped + {entry.left_out} left out"
        )
    return entry


def corpus_accounting(
    info_path: PathLike, corpus_path: PathLike, skipped_path: PathLike
) -> Accounted:
    """The corpus rule's counts, checked against its output files."""
    info = json.loads(Path(info_path).read_text(encoding="utf-8"))
    entry = Accounted(
        "corpus",
        str(info["source"]),
        int(info["rows_read"]),
        _lines(corpus_path),
        pq.read_metadata(skipped_path).num_rows,
        int(info["passed_over"]),
    )
    return _checked(entry, int(info["rows"]), int(info["skipped"]))


def benchmark_accounting(name: str, info_path: PathLike, rows_path: PathLike) -> Accounted | None:
    """A benchmark's counts (rows read up to its limit), checked against its rows file; None for a
    benchmark with no data (the report lists it as skipped with its reason)."""
    info: Mapping[str, Any] = json.loads(Path(info_path).read_text(encoding="utf-8"))
    if info.get("available") is False:
        return None
    skipped = len(info["skipped"])
    entry = Accounted(
        name,
        str(info.get("source", "")),
        int(info["rows"]) + skipped,
        _lines(rows_path),
        skipped,
        0,
    )
    return _checked(entry, int(info["rows"]), skipped)


def accounting_section(entries: Sequence[Accounted]) -> list[str]:
    lines = [
        "## Data accounting",
        "",
        "Every row read is kept, skipped with its reason (`corpus/skipped.parquet`; a benchmark's "
        "`eval_data/<name>.info.json`), or left out by the config (`corpus.skip`: the rows "
        "evaluation uses). A benchmark reads rows only up to its `limit`.",
        "",
        "| input | source | rows read | kept | skipped | left out |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {e.name} | `{e.source}` | {e.read} | {e.kept} | {e.skipped} | {e.left_out} |"
        for e in entries
    ]
    return lines + [""]


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
