"""Snakemake on the repository's workflow in a child process, offline: the workflow tests' runs
and dry runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MICRO = REPO / "tests" / "support" / "micro" / "config.yaml"
BIN = Path(sys.executable).parent  # this environment's `snakemake` and `leafpipe` commands


def snakemake(
    results: Path, *args: str, configfile: Path = MICRO, cores: int = 1, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """`snakemake ARGS` in the repository on `configfile`, writing under `results`. `args` come
    first: `--config` takes every word after it, targets included."""
    cmd = [
        str(BIN / "snakemake"),
        "--cores",
        str(cores),
        *args,
        "--configfile",
        str(configfile),
        "--config",
        f"results={results}",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout)
