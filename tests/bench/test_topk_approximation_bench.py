"""Smoke test of the top-k approximation benchmark (bench/topk_approximation.py) at toy sizes."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "topk_approximation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_topk_approximation", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_benchmark_reports_every_mode_and_is_exact_when_k_is_the_vocabulary(bench, capsys):
    results = bench.main("--vocab 60 --tokens 5 --k 3 60 --seeds 0 1 --threads 1".split())
    table = capsys.readouterr().out.strip().splitlines()
    assert len(results) == 2 * 3 * 2 * 2  # settings x kinds x k x modes
    assert len(table) == 1 + 2 + len(results)  # the caption, the header and its rule, the rows
    assert all(re.search(r"\| -?\d+\.\d{3} ± \d+\.\d{3} \|$", row) for row in table[3:])
    for (setting, kind, k, mode), per_seed in results.items():
        assert len(per_seed) == 2
        if k == 60:  # the whole vocabulary: both modes are the full loss
            for ratio, cosine in per_seed:
                assert ratio == pytest.approx(1, abs=1e-4) and cosine == pytest.approx(1, abs=1e-4)
        elif kind == "forward_kl" and mode == "tail":  # merging categories lowers a KL
            assert all(0 < ratio <= 1 + 1e-6 for ratio, _ in per_seed)


def test_peaked_logits_have_the_asked_entropy(bench):
    teacher, student = bench.draw_logits("peaked", 8, 400, 0, 1.5)
    assert bench.entropy(teacher).item() == pytest.approx(1.5, abs=1e-3)
    assert teacher.shape == student.shape == (8, 400)
