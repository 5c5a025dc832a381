"""The pipeline through profiles/slurm on a real one-node SLURM cluster
(tests/support/slurm_cluster.py).

One run of a small DAG, then one `--forcerun`: tests/support/micro/config.yaml cut to its
world_test benchmark, one variant (kd) and one scoring shard, 23 SLURM jobs (the micro run has
99). Each SLURM job pays ~10 s of sbatch, srun and two snakemake start-ups on top of its stage,
and sacct polling adds latency at each DAG level, so the cut is in both: this test had 29 jobs
with a second variant (leaf_instr), whose distill, generate, grade and attention jobs repeated
kd's and whose counterfactuals and validate_counterfactuals jobs made the DAG 4 levels deeper
(detect -> counterfactuals -> validate_counterfactuals -> distill); no check here needs them, and
the micro run (tests/workflow/test_workflow.py) runs them. Every rule but those two and
teacher_logits still runs as a SLURM job. LEAFPIPE_SLURM_FULL=1 runs the unmodified micro config
instead (25 min on a busy 2-core machine).

Checks: every job was a SLURM job (sacct), a job failed once by the cluster is retried and
succeeds, GPU requests reach SLURM only from rules that ask for GPUs, each job's SLURM log is
kept, partition and account come from the profile's environment variables, and `--forcerun`
reruns only that rule and its dependents. Needs root and apt-get (Debian's slurm-wlm, slurmdbd,
munge, mariadb-server); skips with the reason otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import slurm_cluster as slurm
import snakemake_runs
import yaml
from ci_strict import unavailable
from snakemake_runs import BIN, MICRO, REPO

pytestmark = pytest.mark.slow  # starts a cluster, then runs 23 + 2 SLURM jobs

# the rule whose first SLURM job the cluster's TaskProlog fails: one job, off the critical path
FAIL_ONCE = "benchmark_data"
GPU_RULE = "distill"  # asks for 2 GPUs here (--set-resources); every other rule for none
FORCED = "inspect"  # --forcerun: reruns it and the report, nothing else
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        unavailable("the SLURM test installs and starts slurm daemons: needs root")
    if not slurm.installed() and not Path("/usr/bin/apt-get").exists():
        unavailable("no slurm installed and no apt-get to install it")
    try:
        install_s = slurm.install()
    except (slurm.SetupError, subprocess.TimeoutExpired) as e:
        unavailable(f"could not install slurm: {e}")
    c = slurm.Cluster(tmp_path_factory.mktemp("slurm"))
    start = time.monotonic()
    try:
        c.start()
    except (slurm.SetupError, subprocess.TimeoutExpired, OSError) as e:
        c.stop()
        unavailable(f"could not start a local slurm cluster: {e}")
    c.setup_s = {"apt-get": install_s, "daemons": time.monotonic() - start}
    yield c
    c.stop()


def snakemake(c: slurm.Cluster, results: Path, configfile: Path, *args: str) -> dict:
    env = {
        **c.env,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "LEAFPIPE_SLURM_PARTITION": slurm.PARTITION,
        "LEAFPIPE_SLURM_ACCOUNT": slurm.ACCOUNT,
    }
    cmd = [
        str(BIN / "snakemake"),
        "--workflow-profile",
        "profiles/slurm",
        "--configfile",
        str(configfile),
        "--config",
        f"results={results}",
        # first sacct poll 6 s after a job finished or was submitted, not the plugin's 40 s: the
        # jobs here take 13-22 s, and the plugin waits 10 s more after each poll that finds none
        # done
        "--slurm-init-seconds-before-status-checks",
        "6",
        *args,
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    submitted = [(int(j), s, Path(log)) for j, s, log in SUBMITTED.findall(out)]
    return {
        "out": out,
        "seconds": time.monotonic() - start,
        "run_id": run_id,
        "submitted": submitted,
        "sacct": c.sacct(run_id),
    }


def planned(configfile: Path, results: Path, *args: str) -> Counter:
    """Jobs per rule of a dry run (no cluster involved)."""
    proc = snakemake_runs.snakemake(results, "-n", "--quiet", "rules", *args, configfile=configfile)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = Counter()
    for line in (proc.stdout + proc.stderr).split("Job stats:")[-1].splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def rule_of(comment: str, rules) -> str:
    """The plugin's job comment is rule_<rule> or rule_<rule>_wildcards_<values>."""
    for rule in sorted(rules, key=len, reverse=True):
        if comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_"):
            return rule
    raise AssertionError(f"no rule for comment {comment!r}")


@pytest.fixture(scope="module")
def run(cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slurm-run")
    config = yaml.safe_load(MICRO.read_text())
    config["hardware"] = {"allow_cpu": True}  # the GPUs SLURM gives the distill jobs are fakes
    if not os.environ.get("LEAFPIPE_SLURM_FULL"):
        config["evaluation"]["benchmarks"] = {
            "world_test": config["evaluation"]["benchmarks"]["world_test"]
        }
        config["distill"]["variants"] = ["kd"]
        config["scoring"]["shards"] = 1
    configfile = tmp / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    results = tmp / "results"
    plan = planned(configfile, results)
    (cluster.state / "fail-once" / FAIL_ONCE).touch()
    first = snakemake(cluster, results, configfile, "--set-resources", f"{GPU_RULE}:gpu=2")
    forced_plan = planned(configfile, results, "--forcerun", FORCED)
    forced = snakemake(cluster, results, configfile, "--forcerun", FORCED)
    print(
        f"\nSLURM test: setup {cluster.setup_s}, run {first['seconds']:.0f} s "
        f"({len(first['submitted'])} SLURM jobs), --forcerun {forced['seconds']:.0f} s "
        f"({len(forced['submitted'])} SLURM jobs)"
    )
    return {
        "plan": plan,
        "first": first,
        "forced_plan": forced_plan,
        "forced": forced,
        "results": results,
    }


def test_every_job_ran_as_a_slurm_job(run):
    plan, first = run["plan"], run["first"]
    rules = set(plan)
    # `all` has no command: it is the one job snakemake does not submit
    expected = plan - Counter({"all": plan["all"]})
    # every rule but teacher_logits and the counterfactual ones, the GPU rule among them
    assert len(expected) >= 14 and expected[GPU_RULE] >= 1, plan
    records = first["sacct"]
    by_id = {r["JobIDRaw"]: r for r in records}
    # every submission is in SLURM's accounting, under this run's job name, and nothing else is
    assert sorted(by_id) == sorted(s for _, s, _ in first["submitted"])
    completed = Counter(rule_of(r["Comment"], rules) for r in records if r["State"] == "COMPLETED")
    assert completed == expected
    assert {r["Partition"] for r in records} == {slurm.PARTITION}
    assert {r["Account"] for r in records} == {slurm.ACCOUNT}
    assert (run["results"] / "report" / "summary.md").exists()


def test_a_job_the_cluster_fails_once_is_retried_and_succeeds(run, cluster):
    first = run["first"]
    attempts = sorted(
        (int(r["JobIDRaw"]), r["State"], r["ExitCode"])
        for r in first["sacct"]
        if rule_of(r["Comment"], set(run["plan"])) == FAIL_ONCE
    )
    assert [(state, code) for _, state, code in attempts] == [
        ("FAILED", "1:0"),
        ("COMPLETED", "0:0"),
    ]
    assert (cluster.state / "fail-once" / f"{FAIL_ONCE}.done").read_text().strip() == str(
        attempts[0][0]
    )
    assert [r["State"] for r in first["sacct"]].count("FAILED") == 1
    assert "Trying to restart job" in first["out"]
    # the retry is attempt 2 of the same snakemake job
    snakemake_jobs = {j for j, s, _ in first["submitted"] if int(s) in {a[0] for a in attempts}}
    assert len(snakemake_jobs) == 1
    assert (run["results"] / "seed-0" / "eval_data" / "world_test.jsonl").exists()


def test_gpus_are_requested_only_by_rules_that_ask_for_them(run):
    rules = set(run["plan"])
    for record in run["first"]["sacct"]:
        gpus = re.search(r"gres/gpu=(\d+)", record["AllocTRES"])
        if rule_of(record["Comment"], rules) == GPU_RULE:
            assert gpus and gpus.group(1) == "2", record
        else:  # gpu=0 or no gpu resource: no --gpus flag, no GPU allocated
            assert gpus is None, record


def test_each_slurm_job_keeps_its_log(run):
    first = run["first"]
    logdir = REPO / ".snakemake" / "slurm_logs"
    failed = {r["JobIDRaw"] for r in first["sacct"] if r["State"] == "FAILED"}
    for _, slurm_id, log in first["submitted"]:
        assert log.is_relative_to(logdir) and log.name == f"{slurm_id}.log", log
        assert log.parts[len(logdir.parts)].startswith("rule_")
        text = log.read_text()
        if slurm_id in failed:  # the log tells why it failed
            assert "TaskProlog: failing job" in text and "No module named 'encodings'" in text
        else:  # the job ran snakemake with the profile's settings (not profiles/default's)
            assert "--latency-wait 60" in text and "--executor slurm-jobstep" in text


def test_forcerun_reruns_only_that_rule_and_its_dependents(run):
    forced, plan = run["forced"], run["forced_plan"]
    assert plan == Counter({FORCED: 1, "report": 1, "all": 1})
    rules = Counter(rule_of(r["Comment"], set(run["plan"])) for r in forced["sacct"])
    assert rules == Counter({FORCED: 1, "report": 1})
    assert {r["State"] for r in forced["sacct"]} == {"COMPLETED"}
    assert len(forced["submitted"]) == 2
