import math

import pandas as pd
import pytest
from report_text import MODEL_ROWS, section

from leafpipe.evaluation.grading.numeric_answers import wilson_interval
from leafpipe.report.build import build_report
from leafpipe.report.run_record import TIMING_COLUMNS

MODELS = ["teacher", "student", "kd", "leaf_instr", "leaf_instr_resp"]
LABELS = {
    "teacher": "Teacher",
    "student": "Student (pre-KD)",
    "kd": "KD w/o mask",
    "leaf_instr": "LeaF (instr)",
    "leaf_instr_resp": "LeaF (instr+resp)",
}
BENCHMARKS = {"test": "World test", "test_clean": "World test (clean)"}
CORRECT = {  # out of 200; leaf_instr_resp has no test_clean score
    ("teacher", "test"): 180,
    ("teacher", "test_clean"): 190,
    ("student", "test"): 60,
    ("student", "test_clean"): 100,
    ("kd", "test"): 100,
    ("kd", "test_clean"): 120,
    ("leaf_instr", "test"): 104,
    ("leaf_instr", "test_clean"): 160,
    ("leaf_instr_resp", "test"): 0,
}
DETECTION = {
    "precision": 0.4,
    "recall": 0.75,
    "f1": 0.5217,
    "n_samples": 50,
    "n_tokens": 2000,
    "n_confounders": 150,
    "n_planted": 80,
    "settings": {"percentile": 10, "threshold_cap": 0.5},
    "mean_scores": {
        "planted": {"teacher": 0.1, "student": 0.6, "diff": 0.25},
        "other": {"teacher": 0.3, "student": 0.2, "diff": 0.55},
    },
}


def _score(model, bench, correct, n=200, seed=0):
    low, high = wilson_interval(correct, n)
    return {
        "model": model,
        "benchmark": bench,
        "n": n,
        "correct": correct,
        "seed": seed,
        "accuracy": correct / n,
        "ci_low": low,
        "ci_high": high,
        "extracted": n,
    }


def _build(scores, detection, out_dir, **options):
    """`build_report` with this file's models, labels and benchmarks; `options` are the rest."""
    build_report(
        scores,
        detection,
        out_dir,
        model_order=MODELS,
        model_labels=LABELS,
        benchmark_labels=BENCHMARKS,
        **options,
    )


@pytest.fixture
def scores():
    return [_score(m, b, c) for (m, b), c in CORRECT.items()]


@pytest.fixture
def report(tmp_path, scores):
    _build(scores, {0: DETECTION}, tmp_path / "report", notes="Interpretation goes here.")
    return tmp_path / "report"


def test_files_written_atomically(report):
    assert sorted(p.name for p in report.iterdir()) == [
        "accuracy.png",
        "paired.csv",
        "per_seed.csv",
        "results.json",
        "summary.csv",
        "summary.md",
        "summary.parquet",
    ]


def test_parquet_holds_the_csv_table(report):
    pd.testing.assert_frame_equal(
        pd.read_parquet(report / "summary.parquet"), pd.read_csv(report / "summary.csv")
    )


def test_csv_rows_in_order_with_avg_and_missing_as_nan(report):
    frame = pd.read_csv(report / "summary.csv")
    assert list(frame["model"]) == MODELS
    assert list(frame["label"]) == [LABELS[m] for m in MODELS]
    assert list(frame.columns) == ["model", "label", "test", "test_clean", "Avg"]
    teacher = frame.set_index("model").loc["teacher"]
    assert teacher["test"] == pytest.approx(90.0) and teacher["Avg"] == pytest.approx(92.5)
    resp = frame.set_index("model").loc["leaf_instr_resp"]
    assert resp["test"] == 0.0, "a real zero stays a zero"
    assert math.isnan(resp["test_clean"]) and math.isnan(resp["Avg"])


def _table_rows(md: str) -> dict[str, list[str]]:
    section = md.split("## Accuracy (%)")[1].split("##")[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_markdown_table(report):
    md = (report / "summary.md").read_text()
    table = _table_rows(md)
    assert list(table)[1:] == [LABELS[m] for m in MODELS]
    assert table["Model"] == ["World test (n=200)", "World test (clean) (n=200)", "Avg"]
    half = 100 * (lambda lo, hi: (hi - lo) / 2)(*wilson_interval(180, 200))
    assert table["Teacher"][0] == f"90.0 ± {half:.1f}"
    assert table["Teacher"][2].startswith("92.5 ± ")
    assert table["LeaF (instr+resp)"][0].startswith("0.0 ± ")
    assert table["LeaF (instr+resp)"][1:] == ["—", "—"]
    assert "not a zero" in md.split("## Does LeaF help")[0], "the missing cell has a footnote"
    assert md.rstrip().endswith("Interpretation goes here.")


def test_detection_section(report):
    md = (report / "summary.md").read_text()
    section = md.split("## Confounder detection")[1]
    assert "| 40.0% | 75.0% | 52.2% |" in section
    assert "50 samples, 2000 scored tokens, 150 flagged" in section
    assert "4.0%" in section  # random-flagging precision: 80 planted of 2000 tokens
    assert "`percentile`: 10" in section
    assert "| planted | 0.100 | 0.600 | 0.250 |" in section
    assert "| other | 0.300 | 0.200 | 0.550 |" in section


def test_without_per_problem_results_the_comparison_says_it_was_not_answered(report):
    md = (report / "summary.md").read_text()
    assert (
        "Not computed: no per-problem results"
        in md.split("## Paired comparison with KD w/o mask")[1]
    )
    assert "Not answered" in md.split("## Does LeaF help here?")[1]


def test_png_is_valid(report):
    data = (report / "accuracy.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_unknown_or_duplicate_scores_are_errors(tmp_path, scores):
    with pytest.raises(ValueError, match="two scores"):
        _build(scores + scores[:1], {0: {}}, tmp_path)
    with pytest.raises(ValueError, match="outside"):
        _build(scores + [_score("mystery", "test", 1)], {0: {}}, tmp_path)
    assert not (tmp_path / "summary.md").exists()


def test_detection_section_shows_the_percentile_sweep(tmp_path, scores):
    sweep = pd.DataFrame(
        {
            "percentile": [5.0, 10.0, 20.0],
            "precision": [0.5, 0.4, 0.3],
            "recall": [0.25, 0.75, 0.875],
            "f1": [1 / 3, 0.5217, 0.4468],
            "n_flagged": [40, 150, 233],
        }
    )
    _build(scores, {0: DETECTION}, tmp_path, sweep={0: sweep})
    section = (tmp_path / "summary.md").read_text().split("## Confounder detection")[1]
    assert "| percentile | precision | recall | F1 | flagged |" in section
    assert "| 5 | 50.0% | 25.0% | 33.3% | 40 |" in section
    assert "| 10 (configured) | 40.0% | 75.0% | 52.2% | 150 |" in section
    assert "| 20 | 30.0% | 87.5% | 44.7% | 233 |" in section


def test_sweep_without_planted_labels_shows_missing_not_zero(tmp_path, scores):
    sweep = pd.DataFrame(
        {
            "percentile": [10.0],
            "precision": [math.nan],
            "recall": [math.nan],
            "f1": [math.nan],
            "n_flagged": [12],
        }
    )
    _build(scores, {0: DETECTION}, tmp_path, sweep={0: sweep})
    md = (tmp_path / "summary.md").read_text()
    assert "| 10 (configured) | — | — | — | 12 |" in md
    assert "no planted labels" in md


def test_detection_without_planted_distractors_has_no_precision(tmp_path, scores):
    """A real corpus: 0 planted tokens must not read as 0% precision."""
    unlabelled = {**DETECTION, "precision": 0.0, "recall": 0.0, "f1": 0.0, "n_planted": 0}
    _build(scores, {0: unlabelled}, tmp_path)
    section = (tmp_path / "summary.md").read_text().split("## Confounder detection")[1]
    assert "precision and recall against them are undefined" in section
    assert "| precision | recall | F1 |" not in section and "0.0%" not in section


# Which problems each model solves: ids p<offset> .. p<offset + correct - 1> of 200, so that two
# models' discordant problems are known by construction.
OFFSET = {("leaf_instr", "test"): 4}


def _solved(model, bench, correct, n=200):
    offset = OFFSET.get((model, bench), 0)
    return {f"p{i}": offset <= i < offset + correct for i in range(n)}


def _two_seeds(seed1_teacher_test=180):
    """Every score in seeds 0 and 1 (the teacher's test score in seed 1 given) and their
    outcomes."""
    counts = {0: CORRECT, 1: {**CORRECT, ("teacher", "test"): seed1_teacher_test}}
    scores = [
        _score(m, b, c, seed=seed) for seed, table in counts.items() for (m, b), c in table.items()
    ]
    outcomes = {
        (seed, m, b): _solved(m, b, c)
        for seed, table in counts.items()
        for (m, b), c in table.items()
    }
    return scores, outcomes


def test_several_seeds_give_mean_and_sd_and_each_seeds_own_table(tmp_path):
    scores, _ = _two_seeds(seed1_teacher_test=170)
    _build(scores, {0: DETECTION, 1: DETECTION}, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    pooled = _table_rows(md)
    assert pooled["Model"] == [
        "World test (n=200 per seed)",
        "World test (clean) (n=200 per seed)",
        "Avg",
    ]
    assert pooled["Teacher"][0] == "87.5 ± 3.5", "mean of 90 and 85, sample sd 3.54"
    assert pooled["Teacher"][2] == "91.2 ± 1.8", "per-seed Avg 92.5 and 90.0"
    assert pooled["LeaF (instr+resp)"][1:] == ["—", "—"]
    per_seed = md.split("## Accuracy per seed (%)")[1]
    assert "### Seed 0" in per_seed and "### Seed 1" in per_seed
    assert "| Teacher | 85.0 ± " in per_seed.split("### Seed 1")[1]
    frame = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    assert frame.loc["teacher", "test"] == pytest.approx(87.5)
    rows = pd.read_csv(tmp_path / "per_seed.csv")
    assert len(rows) == 2 * len(CORRECT) and set(rows["seed"]) == {0, 1}
    assert (
        rows.set_index(["seed", "model", "benchmark"]).loc[(1, "teacher", "test"), "accuracy"]
        == 85.0
    )
    detection = md.split("## Confounder detection")[1]
    assert "| 0 | 40.0% | 75.0% | 52.2% | 4.0% |" in detection and "### Seed 1" in detection


def test_paired_table_pools_seeds_and_calls_a_difference_only_when_its_interval_excludes_zero(
    tmp_path,
):
    from leafpipe.report.paired_stats import mcnemar_exact

    scores, outcomes = _two_seeds()
    _build(scores, {0: DETECTION, 1: DETECTION}, tmp_path, outcomes=outcomes)
    paired = pd.read_csv(tmp_path / "paired.csv").set_index(["model", "benchmark"])
    close = paired.loc[("leaf_instr", "test")]
    # per seed: LeaF solves p4..p107, KD p0..p99: 8 problems only LeaF solves, 4 only KD
    assert (close["n"], close["b"], close["c"]) == (400, 16, 8)
    assert close["diff_points"] == pytest.approx(2.0) and close["p_mcnemar"] == pytest.approx(
        mcnemar_exact(16, 8)
    )
    assert close["ci_low_points"] < 0 < close["ci_high_points"]
    assert close["diff_points_seed_0"] == close["diff_points_seed_1"] == pytest.approx(2.0)
    assert 0 < close["mdd_points"] < 10
    clear = paired.loc[("leaf_instr", "test_clean")]
    assert (clear["b"], clear["c"]) == (80, 0) and clear["ci_low_points"] > 0
    assert ("leaf_instr_resp", "test_clean") not in paired.index, (
        "no score in either seed: no pairing"
    )
    md = (tmp_path / "summary.md").read_text()
    table = section(md, "Paired comparison with KD w/o mask")
    assert "| LeaF (instr) | World test | +2.0 | " in table and "| 16/8 | +2.0, +2.0 |" in table
    verdicts = section(md, "Does LeaF help here?")
    for verdict in (
        "- LeaF (instr) on World test: +2.0 points",
        "no difference from KD w/o mask that this run can tell (the CI includes 0",
        "- LeaF (instr) on World test (clean): +20.0 points",
        "better than KD w/o mask",
        "- LeaF (instr+resp) on World test: -50.0 points",
        "worse than KD w/o mask",
        "- LeaF (instr+resp) on World test (clean): no paired result.",
    ):
        assert verdict in verdicts, verdict


def test_reliance_compares_each_model_with_and_without_distractors(tmp_path):
    scores, outcomes = _two_seeds()
    _build(
        scores,
        {0: DETECTION, 1: DETECTION},
        tmp_path,
        outcomes=outcomes,
        reliance=("test", "test_clean"),
    )
    table = section((tmp_path / "summary.md").read_text(), "Reliance on distractors")
    assert "| Student (pre-KD) | 30.0 | 50.0 | -20.0 | " in table and "| ≤ −15: met |" in table
    assert "| Teacher | 90.0 | 95.0 | -5.0 | " in table and "| within ±3: not met |" in table
    assert "LeaF (instr+resp)" not in table, "no clean score: no row"


def test_stage_report_pools_seeds_and_shows_sft_as_a_reference_row_not_a_leaf_candidate(tmp_path):
    import json

    from leafpipe import stages
    from leafpipe.config import validate_config

    config = validate_config(
        {
            "seeds": [0, 1],
            "models": {"teacher": {}, "student": {}},
            "evaluation": {
                "benchmarks": {
                    "test": {"split": "test", "label": "World test"},
                    "test_clean": {"split": "test_clean", "label": "World test (clean)"},
                }
            },
        }
    )
    assert config["distill"]["variants"] == ["sft", "kd", "leaf_instr", "leaf_instr_resp"]
    CORRECT.update({("sft", "test"): 90, ("sft", "test_clean"): 110})
    try:
        scores, outcomes = _two_seeds()
    finally:
        del CORRECT[("sft", "test")], CORRECT[("sft", "test_clean")]
    scores_paths, graded_paths = [], []
    for k, score in enumerate(scores):
        scores_paths.append(tmp_path / f"{k}.scores.json")
        scores_paths[-1].write_text(json.dumps(score))
        graded_paths.append(tmp_path / f"{k}.graded.jsonl")
        rows = outcomes[(score["seed"], score["model"], score["benchmark"])]
        # a second sample of every problem, always wrong: only the first one counts
        graded_paths[-1].write_text(
            "".join(
                json.dumps({"id": i, "sample": j, "correct": ok and j == 0}) + "\n"
                for i, ok in rows.items()
                for j in range(2)
            )
        )
    metrics = [tmp_path / f"metrics-{seed}.json" for seed in (0, 1)]
    for path in metrics:
        path.write_text(json.dumps(DETECTION))
    stages.report(config, scores_paths, metrics, tmp_path / "report", graded=graded_paths)
    md = (tmp_path / "report" / "summary.md").read_text()
    assert list(_table_rows(md))[1:] == MODEL_ROWS
    paired = pd.read_csv(tmp_path / "report" / "paired.csv")
    assert list(dict.fromkeys(paired["model"])) == ["sft", "leaf_instr", "leaf_instr_resp"]
    verdicts = md.split("## Does LeaF help here?")[1].split("##")[0]
    # Benchmarks are named with the protocol that asked them (report.pooled.column_label).
    assert "LeaF (instr) on World test [leafpipe]:" in verdicts and "SFT" not in verdicts
    assert "## Reliance on distractors" in md and "Replicates: seed(s) 0, 1" in md
    frame = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert frame.set_index("model").loc["sft", "test"] == pytest.approx(45.0)


def test_skipped_benchmarks_get_a_reason_not_a_column(tmp_path, scores):
    skipped = [
        {
            "model": m,
            "benchmark": "olympiad",
            "available": False,
            "reason": "no OlympiadBench file: set evaluation.benchmarks.olympiad.path",
        }
        for m in MODELS
    ]
    build_report(
        scores + skipped,
        {0: DETECTION},
        tmp_path,
        model_order=MODELS,
        model_labels=LABELS,
        benchmark_labels={**BENCHMARKS, "olympiad": "OlympiadBench"},
    )
    text = (tmp_path / "summary.md").read_text()
    assert "## Skipped benchmarks" in text and "- `olympiad`: no OlympiadBench file" in text
    assert "OlympiadBench" not in text.split("## Skipped benchmarks")[0]
    assert "olympiad" not in pd.read_csv(tmp_path / "summary.csv").columns


BENCHMARK_HEADER = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
)


def _benchmark_file(path, seconds, max_rss):
    """A file as Snakemake's `benchmark:` writes it (NA: memory not sampled)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCHMARK_HEADER + f"{seconds}\t0:00:00\t{max_rss}\t1\t1\t1\t0\t0\t50\t1\n")
    return str(path)


@pytest.fixture
def timings(tmp_path):
    from leafpipe.report.run_record import read_benchmarks, rule_timings

    bench = tmp_path / "benchmarks"

    def job(rule, path, gpus=0, **measured):
        if measured:
            _benchmark_file(bench / path, measured["s"], measured["rss"])
        return {"rule": rule, "path": str(bench / path), "gpus": gpus}

    return rule_timings(
        read_benchmarks(
            [
                job("distill", "distill/kd.tsv", 2, s=1800.0, rss=2048.0),
                job("distill", "distill/sft.tsv", 1, s=3600.0, rss=1024.0),
                job("detect", "detect.tsv", s=0.5, rss="NA"),
                job("grade", "grade/a.tsv", s=10.0, rss=300.0),
                job("grade", "grade/gone.tsv"),
                job("world", "world.tsv"),
            ]
        )
    )


def test_timings_per_rule_with_gpu_hours_and_untimed_jobs(timings):
    by_rule = timings.set_index("rule")
    assert list(timings["rule"]) == ["distill", "detect", "grade", "world"]
    distill = by_rule.loc["distill"]
    assert (distill["jobs"], distill["timed"], distill["total_s"], distill["max_s"]) == (
        2,
        2,
        5400.0,
        3600.0,
    )
    assert distill["peak_rss_mb"] == 2048.0 and (distill["min_gpus"], distill["max_gpus"]) == (1, 2)
    assert distill["gpu_hours"] == pytest.approx(2.0), (
        "each job's own GPU count: 0.5 h × 2 + 1 h × 1"
    )
    assert by_rule.loc["detect", "gpu_hours"] == 0 and math.isnan(
        by_rule.loc["detect", "peak_rss_mb"]
    )
    assert (
        by_rule.loc["grade", "jobs"],
        by_rule.loc["grade", "timed"],
        by_rule.loc["grade", "total_s"],
    ) == (2, 1, 10.0)
    assert math.isnan(by_rule.loc["world", "total_s"]) and math.isnan(
        by_rule.loc["world", "gpu_hours"]
    )


def test_benchmark_jobs_follow_each_jobs_wildcards():
    import re

    from leafpipe.report.run_record import benchmark_jobs

    class Rule:
        """The part of Snakemake's Rule that benchmark_jobs uses."""

        def __init__(self, name, output, benchmark):
            self.name, self.output, self.benchmark = name, output, benchmark

        def is_producer(self, target):
            return (
                re.fullmatch(self.output.replace("{model}", "(?P<model>[a-z]+)"), target)
                is not None
            )

        def get_wildcards(self, target):
            return re.fullmatch(
                self.output.replace("{model}", "(?P<model>[a-z]+)"), target
            ).groupdict()

        def expand_benchmark(self, wildcards):
            return self.benchmark.format(**wildcards)

    rules = [
        Rule("generate", "eval/{model}.jsonl", "benchmarks/generate/{model}.tsv"),
        Rule("gather", "scores.parquet", None),
    ]
    # As in common.smk: a count, or a function of the job's wildcards (read by attribute).
    resources = {"generate": {"gpu": lambda wc: 4 if wc.model == "teacher" else 1}}
    jobs = benchmark_jobs(
        rules,
        ["eval/teacher.jsonl", "eval/kd.jsonl", "scores.parquet", "other.txt"],
        lambda rule: resources.get(rule, {}),
    )
    assert jobs == [
        {"rule": "generate", "path": "benchmarks/generate/kd.tsv", "gpus": 1},
        {"rule": "generate", "path": "benchmarks/generate/teacher.tsv", "gpus": 4},
    ]


@pytest.fixture
def record(timings):
    from leafpipe.report.run_record import RunRecord, software_versions

    class Config(dict):
        """Snakemake hands scripts its config as a dict subclass."""

    return RunRecord(
        Config({"seeds": [0], "detection": {"percentile": 10}}), software_versions(), timings
    )


def test_record_writes_config_versions_and_timings(tmp_path, scores, record):
    import json

    import yaml

    _build(scores, {0: DETECTION}, tmp_path, notes="Interpretation goes here.", record=record)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {
        "seeds": [0],
        "detection": {"percentile": 10},
    }
    versions = json.loads((tmp_path / "versions.json").read_text())
    assert versions["python"].count(".") == 2 and versions["packages"]["pandas"] == pd.__version__
    assert set(versions["packages"]) >= {
        "torch",
        "transformers",
        "tokenizers",
        "snakemake",
        "leafpipe",
        "math-verify",
    }
    assert {"platform", "gpu", "gpu_count"} <= set(versions["host"]) and versions["git"] is None
    written = pd.read_csv(tmp_path / "timings.csv")
    assert list(written.columns) == TIMING_COLUMNS
    md = (tmp_path / "summary.md").read_text()
    assert "`config.yaml`" in md.split("## Reproducibility")[1] and "`versions.json`" in md
    compute = section(md, "Compute")
    for row in (
        "| distill | 2 | 1:30:00 | 1:00:00 | 2.0 GB | 1–2 | 2.000 |",
        "| detect | 1 | 0:00:00 | 0:00:00 | — | 0 | 0.000 |",
        "| grade | 2 (1 timed) |",
        "| world | 1 (0 timed) | — | — | — | 0 | — |",
        "| all | 6 | 1:30:10 | 1:00:00 | 2.0 GB | | 2.000 |",
    ):
        assert row in compute, row
    assert md.rstrip().endswith("Interpretation goes here.")


def test_versions_name_the_git_commit_only_inside_a_checkout(tmp_path):
    from pathlib import Path

    from leafpipe.report.run_record import software_versions

    assert software_versions(tmp_path)["git"] is None
    git = software_versions(Path(__file__).resolve().parents[2])["git"]
    if git is not None:  # the tests may run from an exported copy of the repository
        assert len(git["commit"]) == 40 and isinstance(git["dirty"], bool)


def test_pooled_detection_sums_the_seeds_token_counts():
    from leafpipe.report.detection import pooled_detection_row

    seeds = [
        {"n_planted": 10, "n_tokens": 40, "n_confounders": 4, "precision": 0.75},  # 3 hits
        {"n_planted": 30, "n_tokens": 60, "n_confounders": 16, "precision": 0.25},  # 4 hits
    ]
    # 7 hits of 20 flagged, 7 of 40 planted, 40 of 100 tokens planted; a mean of the seeds'
    # precisions (50%) would be wrong.
    assert pooled_detection_row(seeds) == ["| pooled | 35.0% | 17.5% | 23.3% | 40.0% |"]
    assert pooled_detection_row([{"n_planted": 0}]) == []
