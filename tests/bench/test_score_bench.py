"""Smoke test of the scoring benchmark (bench/score.py) at toy sizes: a few seconds on one core."""

import importlib.util
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "score.py"
TOY = (
    "--samples 6 --min-tokens 32 --max-tokens 64 --vocab 300 --warmup 2 --repeats 1 --memory off"
).split()


@pytest.fixture(scope="module")
def bench():
    before = os.environ.get("TQDM_DISABLE")
    spec = importlib.util.spec_from_file_location("bench_score", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(
        module
    )  # the script disables tqdm for itself; keep that out of other tests
    if before is None:
        os.environ.pop("TQDM_DISABLE", None)
    else:
        os.environ["TQDM_DISABLE"] = before
    return module


def test_benchmark_checks_equal_results_and_ends_with_the_speed_up(bench, capsys):
    speedup = bench.main(TOY)
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"speed-up: \d+\.\dx", lines[-1])
    assert lines[-1] == f"speed-up: {speedup:.1f}x"
    diff = float(re.search(r"scores: (\S+)", lines[-2]).group(1))
    assert diff <= 1e-4


def test_unequal_results_stop_the_benchmark_without_a_speed_up(bench, monkeypatch, capsys):
    real = bench.ours_scores
    monkeypatch.setattr(
        bench, "ours_scores", lambda *a: [np.clip(x + 0.01, 0, 1) for x in real(*a)]
    )
    with pytest.raises(SystemExit, match="UNEQUAL RESULTS"):
        bench.main(TOY)
    assert "speed-up" not in capsys.readouterr().out
