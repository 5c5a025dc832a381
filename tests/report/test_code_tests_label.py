"""The results table's header says which harness each code benchmark's tests ran in."""

from __future__ import annotations

from typing import Any

from leafpipe.report.accuracy import accuracy_section, index_scores, seeds_section

MODELS = ["student", "leaf"]
LABELS = {"he": "HumanEval+ [evalplus]", "lcb": "LiveCodeBench [leafpipe]", "gsm": "GSM8K"}


def _score(model: str, bench: str, seed: int, code_tests: str | None) -> dict[str, Any]:
    score = dict(
        model=model, benchmark=bench, seed=seed, accuracy=0.5, ci_low=0.4, ci_high=0.6, n=100
    )
    return score if code_tests is None else {**score, "code_tests": code_tests}


def _header(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("| Model"))


def test_a_code_benchmarks_column_names_its_test_mode_and_others_name_none() -> None:
    modes = {"he": "isolated", "lcb": "same_process", "gsm": None}
    scores = [_score(m, b, 0, mode) for m in MODELS for b, mode in modes.items()]
    (table,) = index_scores(scores, MODELS, list(LABELS)).values()
    header = _header(accuracy_section(table, MODELS, {}, LABELS))
    assert header == (
        "| Model | HumanEval+ [evalplus] [tests: isolated] (n=100) "
        "| LiveCodeBench [leafpipe] [tests: same_process] (n=100) | GSM8K (n=100) | Avg |"
    )


def test_scores_graded_in_different_modes_show_both_in_the_seeds_table() -> None:
    scores = [
        _score(m, b, seed, ("same_process" if seed else "isolated") if b != "gsm" else None)
        for m in MODELS
        for b in LABELS
        for seed in (0, 1)
    ]
    tables = index_scores(scores, MODELS, list(LABELS))
    lines = seeds_section(tables, MODELS, {}, LABELS)
    assert "HumanEval+ [evalplus] [tests: isolated/same_process] (n=100 per seed)" in _header(lines)
    per_seed = [line for line in lines if line.startswith("| Model")][1:]
    assert ["[tests: isolated]" in h for h in per_seed] == [True, False]
    assert ["[tests: same_process]" in h for h in per_seed] == [False, True]


def test_isolated_samples_that_ran_in_one_process_are_flagged_in_the_header() -> None:
    """LeetCode tests that pass the program a ListNode ran in one process: the header says so
    wherever a score counts such samples, and not where the count is 0."""
    scores = [
        {**_score(m, b, 0, "isolated" if b != "gsm" else None), "same_process_fallbacks": n}
        for m in MODELS
        for b, n in (("he", 0), ("lcb", 3 if m == "leaf" else 0), ("gsm", None))
    ]
    (table,) = index_scores(scores, MODELS, list(LABELS)).values()
    header = _header(accuracy_section(table, MODELS, {}, LABELS))
    assert "HumanEval+ [evalplus] [tests: isolated] (n=100)" in header
    assert "LiveCodeBench [leafpipe] [tests: isolated; some samples in one process]" in header
