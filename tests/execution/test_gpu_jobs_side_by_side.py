"""GPU claiming end to end: real `snakemake --resources gpu=N` runs of a tiny workflow whose jobs
claim their devices through the pipeline's entry point (`adapter.run`, as every rule does), on
a machine whose GPUs are a fake `CUDA_VISIBLE_DEVICES` list (tests/support/gpu_claim_job.py).

Snakemake's `gpu` resource only counts; these check that the claims turn the count into distinct
devices, and that a job killed with SIGKILL leaves no lock behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
from itertools import combinations
from pathlib import Path

from snakemake_runs import BIN, REPO

JOB_SCRIPT = Path(__file__).resolve().parents[1] / "support" / "gpu_claim_job.py"
HOLD_S = 2.0  # how long each job holds its device: long enough for two to overlap on 2 cores

SNAKEFILE = f"""
config.setdefault("hardware", {{"allow_cpu": False}})

rule all:
    input: expand("done/{{job}}", job=config["jobs"].split(","))

rule probe:
    output: done="done/{{job}}"
    log: "logs/{{job}}.log"
    params: records="records", hold_s=config["hold_s"], die_first=config["die_first"]
    resources: gpu=1
    script: "{JOB_SCRIPT}"
"""


def snakemake(tmp_path: Path, gpus: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`snakemake ARGS` of the workflow above in `tmp_path`, on a machine whose GPUs are `gpus`
    ("0,1"), with its own lock pool. `--config` comes last: it takes every word after it."""
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": gpus,
        "LEAFPIPE_GPU_LOCKS": str(tmp_path / "locks"),
        "LEAFPIPE_GPU_WAIT_MIN": "1",  # a lock left stale fails the waiting job within a minute
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def run_jobs(
    tmp_path: Path, gpus: str, *, jobs: str, cores: int, gpu_limit: int, die_first: bool = False
) -> tuple[subprocess.CompletedProcess[str], dict[str, dict]]:
    """`snakemake --cores CORES --resources gpu=GPU_LIMIT` of one `probe` job per name in `jobs`
    on a machine with GPUs `gpus`; returns the run and each job's record (devices, start, end)."""
    (tmp_path / "records").mkdir()
    run = snakemake(
        tmp_path,
        gpus,
        *("--cores", str(cores), "--resources", f"gpu={gpu_limit}", "--keep-going"),
        *("--config", f"jobs={jobs}", f"hold_s={HOLD_S}", f"die_first={die_first}"),
    )
    records = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")}
    return run, records


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_snakemake_runs_two_one_gpu_jobs_side_by_side_on_distinct_devices(tmp_path):
    run, records = run_jobs(tmp_path, "0,1", jobs="a,b,c", cores=3, gpu_limit=2)
    assert run.returncode == 0, run.stderr
    assert sorted(records) == ["a", "b", "c"] and all(
        r["devices"] in ("0", "1") for r in records.values()
    )
    at_once = [(x, y) for x, y in combinations(records.values(), 2) if overlap(x, y)]
    assert at_once, f"no two jobs ran at once: {records}"
    assert all(x["devices"] != y["devices"] for x, y in at_once), records
    # --resources gpu=2: never three at once, so the last to start waited for one to end and has
    # that job's device
    last = max(records.values(), key=lambda r: r["start"])
    ended = [r for r in records.values() if r is not last and r["end"] <= last["start"]]
    assert ended, f"the third job started while two held devices: {records}"
    assert last["devices"] in {r["devices"] for r in ended}


def test_a_job_killed_with_sigkill_mid_job_frees_its_device_for_the_next(tmp_path):
    """One device and no gpu limit from Snakemake (gpu=2), as with two snakemakes on one machine:
    the second job waits for the lock of the first, which dies of SIGKILL while holding it."""
    run, records = run_jobs(tmp_path, "0", jobs="a,b", cores=2, gpu_limit=2, die_first=True)
    victim = (tmp_path / "records" / "victim").read_text()
    (survivor,) = {"a", "b"} - {victim}
    assert run.returncode != 0 and "end" not in records[victim]  # killed, and Snakemake says so
    assert not (tmp_path / "done" / victim).exists() and (tmp_path / "done" / survivor).exists()
    assert records[victim]["devices"] == records[survivor]["devices"] == "0"
    assert records[survivor]["start"] >= records[victim]["start"] + HOLD_S  # it waited, not shared
    assert (
        "rule probe waits for 1 free GPU(s) of 0"
        in (tmp_path / "logs" / f"{survivor}.log").read_text()
    )


def test_the_local_gpu_profile_counts_the_visible_gpus_and_lowers_a_larger_request(tmp_path):
    """profiles/local-gpu's `gpu` limit is the machine's GPU count, and a job asking for more is
    not refused: Snakemake lowers its request to the limit (docs/cluster.md)."""
    dry = snakemake(
        tmp_path,
        "0,1,2",
        *("-n", "--workflow-profile", str(REPO / "profiles" / "local-gpu")),
        *("--set-resources", "probe:gpu=4", "--config", "jobs=a", "hold_s=0", "die_first=False"),
    )
    assert dry.returncode == 0, dry.stderr
    assert re.search(r"resources: .*\bgpu=3\b", dry.stdout + dry.stderr), dry.stdout
