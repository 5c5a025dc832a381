"""Smoke test of the distillation-loss benchmark (bench/distill.py) at toy sizes: seconds on one
core."""

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "distill.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_distill", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_benchmark_checks_equal_results_and_prints_one_ratio_line_per_vocab(bench, capsys):
    ratios = bench.main(
        "--vocab 300 1000 --seq 64 --hidden 32 --teacher-hidden 48 --chunk-tokens 16 "
        "--threads 1".split()
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert set(ratios) == {300, 1000}
    for line, (vocab, (saving, ratio)) in zip(lines[-2:], ratios.items()):
        assert re.fullmatch(r"vocab \d+: memory saving (\d+\.\dx|n/a), time ratio \d+\.\dx", line)
        assert line.startswith(f"vocab {vocab}:") and f"time ratio {ratio:.1f}x" in line
        assert saving is None or saving > 0


def test_gpu_step_runs_with_cpu_sized_stand_ins(bench, capsys):
    args = bench.parse_args(
        "--gpu-step --student-shape tiny-student --teacher-shape tiny-teacher --seq 32 --steps 1 "
        "--trained-frac 0.5".split()
    )
    result = bench.gpu_step(args)
    assert result["tokens_per_s"] > 0 and math.isfinite(result["loss"]) and result["loss"] > 0
    assert "MFU" in capsys.readouterr().out
