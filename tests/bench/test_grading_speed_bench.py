"""Smoke test of the grading-speed benchmark (bench/grading_speed.py) at toy size: both sides
measured in their subprocesses, the "before" side exported from HEAD."""

from __future__ import annotations

import re
from types import ModuleType

import pytest
from bench_scripts import load_bench_script

from leafpipe.evaluation.grading.math_answers import grade_math

ROW = re.compile(r"\| (.+?) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench_script("grading_speed")


@pytest.mark.slow  # two sides, each grading in its own subprocess: about 20 s on 2 busy cores
def test_every_measurement_has_a_before_an_after_and_their_ratio(bench: ModuleType) -> None:
    text = bench.main("--items 3 --samples 3 --repeats 1 --before HEAD".split())
    rows = {m.group(1): m.groups()[1:] for m in map(ROW.fullmatch, text.splitlines()[2:]) if m}
    assert {"math: grading table", "math: GSM8K", "code: HumanEval, same_process"} <= set(rows)
    assert len(rows) == len(text.splitlines()) - 2
    for n, before, after, ratio in rows.values():
        assert n == "3"
        assert float(ratio) == pytest.approx(float(after) / float(before), rel=0.02)


def test_the_gsm8k_style_completions_alternate_right_and_wrong(bench: ModuleType) -> None:
    verdicts = grade_math(bench.gsm8k_pairs(4), workers=1)
    assert [v.correct for v in verdicts] == [True, False, True, False]
