"""results.json in the shape of lm-evaluation-harness's results file (field names from
`lm_eval/result_schema.py` and `lm_eval/evaluator_utils.py`, commit 4e7e0d4: `results` with
"<metric>,<filter>" and "<metric>_stderr,<filter>" keys, `n-samples` {original, effective},
`configs`, `higher_is_better`, `groups` and `group_subtasks`)."""

import json
import math
import statistics

import pandas as pd

from leafpipe.report.build import build_report
from leafpipe.report.lm_eval_results import lm_eval_results


def _score(model, bench, correct, n=20, seed=0, **extra):
    return {
        "model": model,
        "benchmark": bench,
        "seed": seed,
        "n": n,
        "samples": 1,
        "correct": correct,
        "accuracy": correct / n,
        "ci_low": 0.0,
        "ci_high": 1.0,
        "pass_at_k": {"1": correct / n},
        **extra,
    }


def test_one_seed_gives_a_task_per_benchmark_with_the_harness_stderr():
    table = {
        ("kd", "gsm8k"): _score("kd", "gsm8k", 7),
        ("kd", "hotpot"): _score("kd", "hotpot", 5, f1=0.4),
    }
    shaped = lm_eval_results({0: table}, ["kd"], {"gsm8k": "GSM8K", "hotpot": "HotpotQA"})["kd"]
    gsm8k = shaped["results"]["gsm8k"]
    assert gsm8k["alias"] == "GSM8K" and gsm8k["acc,none"] == 7 / 20
    outcomes = [1.0] * 7 + [0.0] * 13  # the harness's mean_stderr: sample sd / sqrt(n)
    assert math.isclose(gsm8k["acc_stderr,none"], statistics.stdev(outcomes) / math.sqrt(20))
    assert gsm8k["pass@1,none"] == 7 / 20 and gsm8k["pass@1_stderr,none"] == "N/A"
    assert shaped["results"]["hotpot"]["f1,none"] == 0.4
    assert shaped["n-samples"]["gsm8k"] == {"original": 20, "effective": 20}
    assert shaped["higher_is_better"]["hotpot"] == {"acc": True, "pass@1": True, "f1": True}
    assert "groups" not in shaped


def test_several_samples_per_problem_leave_the_stderr_unknown_not_wrong():
    table = {("kd", "he"): _score("kd", "he", 3, samples=4, decoding="sampled")}
    task = lm_eval_results({0: table}, ["kd"], {"he": "HumanEval"})["kd"]["results"]["he"]
    assert task["acc_stderr,none"] == "N/A"


def test_seeds_are_tasks_of_a_group_whose_mean_is_the_summarys():
    tables = {
        1: {("kd", "t"): _score("kd", "t", 10, seed=1), ("kd", "u"): _score("kd", "u", 4, seed=1)},
        2: {("kd", "t"): _score("kd", "t", 14, seed=2)},  # u lacks seed 2
    }
    shaped = lm_eval_results(tables, ["kd", "sft"], {"t": "T", "u": "U"})
    kd = shaped["kd"]
    assert set(kd["results"]) == {"t_seed1", "t_seed2", "t", "u_seed1"}
    assert kd["group_subtasks"] == {"t": ["t_seed1", "t_seed2"]}, "no mean over fewer seeds"
    assert kd["groups"]["t"]["acc,none"] == statistics.fmean([0.5, 0.7])
    assert math.isclose(
        kd["groups"]["t"]["acc_stderr,none"], statistics.stdev([0.5, 0.7]) / math.sqrt(2)
    )
    assert shaped["sft"]["results"] == {}, "a model without scores has no tasks, not zeros"


def test_the_report_writes_results_json_beside_summary_csv(tmp_path):
    scores = [_score(m, "t", c) for m, c in [("teacher", 18), ("student", 6), ("kd", 9)]]
    build_report(
        scores,
        {},
        tmp_path,
        model_order=["teacher", "student", "kd"],
        model_labels={},
        benchmark_labels={"t": "T"},
    )
    results = json.loads((tmp_path / "results.json").read_text())
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    for model in ["teacher", "student", "kd"]:
        assert round(100 * results[model]["results"]["t"]["acc,none"], 2) == summary.loc[model, "t"]
