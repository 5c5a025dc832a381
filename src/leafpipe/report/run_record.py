"""What a published result needs beside its numbers: the settings, the software and the cost.

Evaluation numbers move with library versions, batch shapes and sandbox limits, so the report
folder carries the validated config and the versions it was made with; and wall time and
GPU-hours per rule say what reproducing a row costs.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import yaml

from leafpipe.files.atomic import atomic_path, write_json, write_text

PACKAGES = ("torch", "transformers", "tokenizers", "snakemake", "leafpipe", "math-verify", "pandas")
TIMING_COLUMNS = [
    "rule",
    "jobs",
    "timed",
    "total_s",
    "max_s",
    "peak_rss_mb",
    "min_gpus",
    "max_gpus",
    "gpu_hours",
]
MISSING = "—"


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(repo: str | Path) -> dict[str, Any] | None:
    """The checkout's commit and whether tracked files differ from it; None outside a git repo."""

    def git(*args: str) -> str | None:
        try:
            # No optional locks: `status` must not rewrite the index while someone else uses git.
            proc = subprocess.run(
                ["git", "--no-optional-locks", "-C", str(repo), *args],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _host() -> dict[str, Any]:
    """The platform and GPUs of the calling process's host (on a cluster, the report job's node,
    not necessarily the one that trained)."""
    import torch

    available = torch.cuda.is_available()
    return {
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if available else None,
        "gpu_count": torch.cuda.device_count() if available else 0,
    }


def software_versions(repo: str | Path | None = None) -> dict[str, Any]:
    """Python, the packages results depend on (None: not installed), torch's CUDA build (None:
    CPU-only), this host, and `repo`'s git commit (None outside a git repo or without `repo`)."""
    import torch

    return {
        "python": platform.python_version(),
        "packages": {name: _package_version(name) for name in PACKAGES},
        "cuda_build": torch.version.cuda,
        "host": _host(),
        "git": None if repo is None else _git(repo),
    }


def benchmark_jobs(
    rules: Iterable[Any], targets: Iterable[str], resources: Callable[[str], Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The benchmarked jobs that make `targets`, by rule in `rules` order: rule, path (its
    benchmark file) and gpus (the rule's `gpu` in `resources(rule)`, a count or, as Snakemake
    allows, a function of the job's wildcards; 0 without one). `rules` are Snakemake's Rule objects
    (`workflow.rules`); rules without `benchmark:` are left out."""
    targets = list(targets)
    jobs = []
    for rule in rules:
        if not rule.benchmark:
            continue
        gpu = resources(rule.name).get("gpu", 0)
        found = {}
        for target in filter(rule.is_producer, targets):
            wildcards = rule.get_wildcards(target)
            gpus = gpu(SimpleNamespace(**wildcards)) if callable(gpu) else gpu
            found[str(rule.expand_benchmark(wildcards))] = int(gpus)
        jobs += [{"rule": rule.name, "path": path, "gpus": found[path]} for path in sorted(found)]
    return jobs


def read_benchmarks(jobs: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """`jobs` (`benchmark_jobs()`) with what their Snakemake `benchmark:` TSVs say: rule, path,
    gpus, s (wall seconds, summed over `repeat()` rows) and max_rss (MB, the largest row). A job
    whose file is absent (run before its rule had `benchmark:`, or the file deleted) has NaN for
    both; Snakemake writes NA for memory when a job ended before it was first sampled."""
    records = []
    for job in jobs:
        s = rss = math.nan
        if Path(job["path"]).exists():
            frame = pd.read_csv(job["path"], sep="\t")
            s, rss = float(frame["s"].sum()), float(frame["max_rss"].max())
        records.append(
            {
                "rule": job["rule"],
                "path": str(job["path"]),
                "gpus": int(job["gpus"]),
                "s": s,
                "max_rss": rss,
            }
        )
    return pd.DataFrame.from_records(records, columns=["rule", "path", "gpus", "s", "max_rss"])


def rule_timings(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule of `jobs` (`read_benchmarks()`), in first-seen order: jobs, timed (jobs with a
    benchmark file), total_s and max_s (wall seconds), peak_rss_mb, min_gpus and max_gpus (per job)
    and gpu_hours (the sum of each job's s × gpus / 3600). Sums over no timed job are NaN, not 0."""
    records = []
    for rule, group in jobs.groupby("rule", sort=False):
        timed = group["s"].notna()
        records.append(
            {
                "rule": rule,
                "jobs": len(group),
                "timed": int(timed.sum()),
                "total_s": float(group["s"].sum()) if timed.any() else math.nan,
                "max_s": float(group["s"].max()),
                "peak_rss_mb": float(group["max_rss"].max()),
                "min_gpus": int(group["gpus"].min()),
                "max_gpus": int(group["gpus"].max()),
                "gpu_hours": float((group["s"] * group["gpus"]).sum()) / 3600
                if timed.any()
                else math.nan,
            }
        )
    # Benchmark files give seconds and MB to two decimals; floating sums should not add digits.
    return pd.DataFrame.from_records(records, columns=TIMING_COLUMNS).round(
        {"total_s": 2, "max_s": 2, "peak_rss_mb": 2, "gpu_hours": 4}
    )


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return MISSING
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{sec:02d}"


def _memory(mb: float) -> str:
    return MISSING if math.isnan(mb) else f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _hours(hours: float) -> str:
    return MISSING if math.isnan(hours) else f"{hours:.3f}"


@dataclass(frozen=True)
class RunRecord:
    """The report folder's provenance: `config` (the validated config), `versions`
    (`software_versions()`) and `timings` (`rule_timings()`)."""

    config: Mapping[str, Any]
    versions: Mapping[str, Any]
    timings: pd.DataFrame

    def write(self, out_dir: str | Path) -> None:
        """config.yaml, versions.json and timings.csv into `out_dir`, atomically."""
        out = Path(out_dir)
        # Through JSON: Snakemake's config is a dict subclass that safe_dump refuses.
        plain = json.loads(json.dumps(self.config))
        write_text(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True), out / "config.yaml")
        write_json(dict(self.versions), out / "versions.json")
        with atomic_path(out / "timings.csv") as tmp:
            self.timings.to_csv(tmp, index=False)

    def sections(self) -> list[str]:
        """The summary's Markdown sections: where the settings and software are, and the cost."""
        return self._software_lines() + self._timing_lines()

    def _software_lines(self) -> list[str]:
        v = self.versions
        packages = ", ".join(
            f"{name} {version or 'not installed'}" for name, version in v["packages"].items()
        )
        git = v.get("git")
        commit = (
            "not a git checkout"
            if not git
            else git["commit"][:12] + (" with uncommitted changes" if git["dirty"] else "")
        )
        host = v["host"]
        return [
            "## Reproducibility",
            "",
            "- Settings: `config.yaml`, the validated config this report was made with (defaults "
            "filled in).",
            f"- Software: `versions.json`. Python {v['python']}; {packages}; CUDA build "
            f"{v['cuda_build'] or 'none'}; commit {commit}. "
            f"The report job ran on {host['platform']} "
            f"with GPU: {host['gpu'] or 'none'}.",
            "- Tables: `summary.csv` and `summary.parquet` (the accuracy table, in percent; "
            "empty where missing), `timings.csv` (below).",
            "",
        ]

    def _timing_lines(self) -> list[str]:
        t = self.timings
        lines = ["## Compute", ""]
        if not len(t):
            return lines + ["Not recorded: no benchmark files were given.", ""]
        lines += [
            "Wall time and peak memory (RSS) of each job, from Snakemake's `benchmark:` files: the "
            "last successful run of each job (a rerun overwrites its file; failed attempts are not "
            "counted). GPU-hours: each job's wall time × the GPUs it requested "
            "(`resources: gpu`) / 3600. "
            "The row `all` sums over jobs, which may have run side by side. The report job itself "
            "is not timed: it writes this table.",
            "",
            "| rule | jobs | total wall time | max wall time | peak RSS | GPUs/job | GPU-hours |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in t.itertuples(index=False):
            jobs = str(r.jobs) if r.timed == r.jobs else f"{r.jobs} ({r.timed} timed)"
            gpus = str(r.max_gpus) if r.min_gpus == r.max_gpus else f"{r.min_gpus}–{r.max_gpus}"
            lines.append(
                f"| {r.rule} | {jobs} | {_duration(r.total_s)} | {_duration(r.max_s)} | "
                f"{_memory(r.peak_rss_mb)} | {gpus} | {_hours(r.gpu_hours)} |"
            )
        lines.append(
            f"| all | {t['jobs'].sum()} | {_duration(t['total_s'].sum(min_count=1))} | "
            f"{_duration(t['max_s'].max())} | {_memory(t['peak_rss_mb'].max())} | | "
            f"{_hours(t['gpu_hours'].sum(min_count=1))} |"
        )
        if (t["timed"] < t["jobs"]).any():
            lines += [
                "",
                f"(n timed): only n of the rule's jobs have a benchmark file (the others ran "
                f"before the rule had one, or it was deleted); {MISSING}: not measured.",
            ]
        return lines + [""]
