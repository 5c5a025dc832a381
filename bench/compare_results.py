"""Compare two results folders file by file: did a change alter what the pipeline computes?

Used to check that a refactor leaves the default run's outputs as they were (issue 16):

    .venv/bin/python bench/compare_results.py BEFORE/results results

Each file present in either folder is one line of the verdict:
- `same bytes`: identical files;
- `same data`: the content is equal although the bytes are not: Parquet and CSV tables equal
  under pandas (Parquet's key-value metadata, which holds input fingerprints, is not compared),
  JSON equal once the keys that record when, where and how long (`VOLATILE`) are removed,
  safetensors with equal tensors, tables and text equal once the columns and lines that record
  time, memory and the software (`VOLATILE`, `VOLATILE_LINE`) are removed;
- `differs`: anything else, with the first differing lines or columns;
- `only in A` / `only in B`.
Logs, Snakemake's benchmark timings and `.snakemake` state are skipped: they record time, not
results. The exit status is 1 when any compared file differs or is missing on one side.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd

SKIPPED_DIRS = {"logs", "benchmarks", ".snakemake"}
# JSON keys and table columns whose values are the run's circumstances, not its results.
VOLATILE = {
    *("seconds", "time", "timings", "started", "finished", "created", "git", "software"),
    *("hostname", "host", "wall_s", "elapsed_s", "duration_s", "cpu_s", "max_rss_mb"),
    *("total_s", "max_s", "peak_rss_mb"),
}
# Report lines that name the software and commit, or give a job's time and memory.
VOLATILE_LINE = re.compile(r"^- Software: |^\| \w+ \| \d+ \| \d+:\d\d:\d\d \|")


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _tables_equal(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    a, b = (t.drop(columns=[c for c in t.columns if c in VOLATILE]) for t in (a, b))
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    except AssertionError as err:
        return str(err).splitlines()[0] if str(err) else "tables differ"
    return None


def _text_diff(a: Path, b: Path) -> str:
    left, right = (
        [ln for ln in p.read_text(errors="replace").splitlines() if not VOLATILE_LINE.search(ln)]
        for p in (a, b)
    )
    lines = [ln for ln in difflib.unified_diff(left, right, lineterm="", n=0) if ln[:1] in "+-"]
    return "; ".join(lines[2:8])


def compare(a: Path, b: Path) -> tuple[str, str]:
    """The verdict for one pair of files, and a detail when they differ."""
    if a.read_bytes() == b.read_bytes():
        return "same bytes", ""
    suffix = a.suffix
    if suffix == ".parquet":
        why = _tables_equal(pd.read_parquet(a), pd.read_parquet(b))
    elif suffix in (".csv", ".tsv"):
        sep = "\t" if suffix == ".tsv" else ","
        why = _tables_equal(pd.read_csv(a, sep=sep), pd.read_csv(b, sep=sep))
    elif suffix == ".json":
        same = _strip(json.loads(a.read_text())) == _strip(json.loads(b.read_text()))
        why = None if same else _text_diff(a, b)
    elif suffix == ".safetensors":
        from safetensors.torch import load_file

        ta, tb = load_file(a), load_file(b)
        same = ta.keys() == tb.keys() and all(ta[k].equal(tb[k]) for k in ta)
        why = None if same else "tensors differ"
    elif suffix in (".png", ".pt", ".bin", ".html", ".pdf"):
        why = "bytes differ"
    else:
        why = _text_diff(a, b) or None
    return ("same data", "") if why is None else ("differs", why)


def files_of(root: Path) -> set[Path]:
    return {
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and not SKIPPED_DIRS & set(p.relative_to(root).parts)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="one results folder (e.g. before the change)")
    parser.add_argument("b", type=Path, help="the other (e.g. after)")
    args = parser.parse_args(argv)
    counts: dict[str, int] = {}
    for rel in sorted(files_of(args.a) | files_of(args.b)):
        pa, pb = args.a / rel, args.b / rel
        if not pa.exists() or not pb.exists():
            verdict, detail = ("only in B" if not pa.exists() else "only in A"), ""
        else:
            verdict, detail = compare(pa, pb)
        counts[verdict] = counts.get(verdict, 0) + 1
        print(f"{verdict:10}  {rel}" + (f"  ({detail[:300]})" if detail else ""))
    print("summary: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    return int(any(v not in ("same bytes", "same data") for v in counts))


if __name__ == "__main__":
    sys.exit(main())
