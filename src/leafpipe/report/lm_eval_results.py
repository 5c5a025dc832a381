"""results.json: the report's scores in the shape of lm-evaluation-harness's results file, so
that tools written for the harness's output read leafpipe's too.

The file maps each model to one results object, shaped as the harness's `results_<time>.json`
(`lm_eval/result_schema.py` and `evaluator_utils.py` of EleutherAI/lm-evaluation-harness, commit
4e7e0d4): `results` holds a task per benchmark, with `"<metric>,<filter>"` keys (filter `none`:
leafpipe applies none of the harness's filters) and `"<metric>_stderr,none"` beside each;
`n-samples`, `configs`, `higher_is_better` and `config` follow. `acc` is the score's accuracy
(the unbiased pass@1 with several samples per problem); its standard error is the harness's
`mean_stderr` over the problems' 0/1 outcomes, sqrt(p(1-p)/(n-1)), and "N/A" (as the harness
writes it) where it cannot be had from the scores: with several samples per problem, for pass@k
and F1, or for one problem. `versions` is left out: leafpipe's benchmarks are not harness tasks.

With several seeds each seed's score is a task `<benchmark>_seed<k>`, and the benchmark is a
group of them (`groups`, `group_subtasks`), as the harness groups subtasks: its `acc` is the mean
over seeds (summary.csv's figure), its stderr the seeds' sd / sqrt(seeds), the spread between
replicates rather than the harness's pooled within-task error.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from leafpipe.report.accuracy import Tables

NA = "N/A"  # the harness's stderr when it computes none
Score = Mapping[str, Any]


def _acc_stderr(score: Score) -> float | str:
    """The harness's mean_stderr of 0/1 outcomes (sample sd / sqrt(n)), when the score is one."""
    n, p = score["n"], score["accuracy"]
    if score.get("samples", 1) != 1 or n < 2:
        return NA
    return math.sqrt(p * (1 - p) / (n - 1))


def metric_values(score: Score) -> dict[str, float]:
    """A score's metrics by the harness's names: acc, each pass@k, and F1 (QA)."""
    values = {"acc": score["accuracy"]}
    values |= {f"pass@{k}": v for k, v in score.get("pass_at_k", {}).items()}
    return values | ({"f1": score["f1"]} if "f1" in score else {})


def task_metrics(name: str, label: str, score: Score) -> dict[str, Any]:
    """One task's entry of `results`: each metric with its stderr."""
    metrics: dict[str, Any] = {"name": name, "alias": label, "sample_len": score["n"]}
    for metric, value in metric_values(score).items():
        stderr = _acc_stderr(score) if metric == "acc" else NA
        metrics |= {f"{metric},none": value, f"{metric}_stderr,none": stderr}
    return metrics


def task_config(name: str, label: str, score: Score) -> dict[str, Any]:
    """A task's `configs` entry: what the harness records of a task that leafpipe has to say."""
    return {
        "task": name,
        "task_alias": label,
        "output_type": "generate_until",
        "repeats": score.get("samples", 1),
        "generation_kwargs": {"max_gen_toks": score.get("max_new_tokens")},
        "metadata": {
            key: score.get(key)
            for key in ("task", "protocol", "decoding", "source", "batch_size", "seed")
        },
    }


def group_metrics(name: str, label: str, subtasks: Sequence[Score]) -> dict[str, Any]:
    """A benchmark's entry over its seeds' tasks: the mean acc and its error across seeds."""
    accs = [s["accuracy"] for s in subtasks]
    spread = statistics.stdev(accs) / math.sqrt(len(accs)) if len(accs) > 1 else NA
    return {
        "name": name,
        "alias": label,
        "sample_len": sum(s["n"] for s in subtasks),
        "acc,none": statistics.fmean(accs),
        "acc_stderr,none": spread,
    }


def _model_tasks(tables: Tables, model: str, benchmark: str) -> dict[str, Score]:
    """A model's tasks for one benchmark: the benchmark itself with one seed, else one per seed
    that has a score."""
    found = {seed: t[(model, benchmark)] for seed, t in tables.items() if (model, benchmark) in t}
    if len(tables) == 1:
        return {benchmark: score for score in found.values()}
    return {f"{benchmark}_seed{seed}": score for seed, score in found.items()}


def model_results(
    tables: Tables, model: str, benchmark_labels: Mapping[str, str]
) -> dict[str, Any]:
    """One model's results object, shaped as the harness's results file."""
    results: dict[str, Any] = {}
    configs, n_samples, better, groups, subtasks = {}, {}, {}, {}, {}
    for bench, label in benchmark_labels.items():
        tasks = _model_tasks(tables, model, bench)
        for task, score in tasks.items():
            results[task] = task_metrics(task, label, score)
            configs[task] = task_config(task, label, score)
            n_samples[task] = {"original": score["n"], "effective": score["n"]}
            better[task] = dict.fromkeys(metric_values(score), True)
        if len(tables) > 1 and len(tasks) == len(tables):  # every seed: a mean that compares
            groups[bench] = results[bench] = group_metrics(bench, label, list(tasks.values()))
            subtasks[bench] = list(tasks)
    shaped: dict[str, Any] = {"results": results}
    shaped |= {"groups": groups, "group_subtasks": subtasks} if groups else {}
    return shaped | {
        "configs": configs,
        "higher_is_better": better,
        "n-samples": n_samples,
        "config": {"model": "leafpipe", "seeds": list(tables)},
        "model_name": model,
    }


def lm_eval_results(
    tables: Tables, models: Sequence[str], benchmark_labels: Mapping[str, str]
) -> dict[str, Any]:
    """results.json: model -> its harness-shaped results, over the benchmarks not skipped."""
    return {model: model_results(tables, model, benchmark_labels) for model in models}
