"""Smoke test of the generation benchmark (bench/generate.py) at toy sizes."""

import importlib.util
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "generate.py"
TOY = "--prompts 6 --batch-size 3 --max-new-tokens 6 --repeats 1 --threads 1".split()


@pytest.fixture(scope="module")
def bench(monkeypatch_module):
    spec = importlib.util.spec_from_file_location("bench_generate", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TQDM_DISABLE", "1")  # the script sets it for itself; keep it out of other tests
        yield mp


def test_benchmark_checks_equal_completions_and_ends_with_the_speed_up(bench, capsys):
    speedup = bench.main(TOY)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == "completions equal: 6 of 6"
    assert (
        re.fullmatch(r"speed-up: \d+\.\dx", lines[-1]) and lines[-1] == f"speed-up: {speedup:.1f}x"
    )


def test_unequal_completions_stop_the_benchmark(bench, monkeypatch, capsys):
    real = bench.generate

    def wrong_when_batched(*args, batch_size, **kwargs):
        out = real(*args, batch_size=batch_size, **kwargs)
        return [{**o, "completion": o["completion"] + "!"} for o in out] if batch_size > 1 else out

    monkeypatch.setattr(bench, "generate", wrong_when_batched)
    with pytest.raises(SystemExit, match="UNEQUAL RESULTS"):
        bench.main(TOY)
    assert "speed-up" not in capsys.readouterr().out
