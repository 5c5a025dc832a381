"""The first GPU run's benchmark (bench/gpu_first_run.py) on the CPU: every phase runs through the
library and gets a row; the real shape's model is the one the planner sizes."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu_first_run.py"
PHASES = {"scoring", "teacher top-k cache", "attention", "distillation (kd, top-k cache)"}


def load_bench(monkeypatch):
    # The script sets these for itself on import. setenv records their state now, so that the
    # test's end restores it (a bare delenv of an unset name records nothing, and the script's
    # TQDM_DISABLE would then silence the progress bars other tests count).
    for name in ("TQDM_DISABLE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    spec = importlib.util.spec_from_file_location("bench_gpu_first_run", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_phase_gets_finite_positive_estimate_measure_and_time_on_cpu(tmp_path):
    out = tmp_path / "run.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--device",
            "cpu",
            "--shape",
            "tiny",
            "--samples",
            "4",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["results"]
    assert {r["phase"] for r in rows} == PHASES
    assert len(rows) == len(PHASES)  # on a CPU the cache's device row is its host row
    for r in rows:
        assert r["memory"] == "host RSS"
        for key in ("estimate_gib", "measured_gib", "ratio", "seconds"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["phase"], key, r[key])
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0][2:] for line in table[1:]] == [r["phase"] for r in rows]


def test_the_llama_preset_builds_the_shipped_shape_with_the_planned_parameter_count(
    monkeypatch, tokenizer
):
    bench = load_bench(monkeypatch)
    shape = bench.model_shapes.hub_shape(bench.PRESETS["llama-3.2-1b"].model)
    config = bench.model_config(shape, tokenizer)
    assert bench.memory.model_shape(config) == shape
    model = bench.build_model(config, torch.bfloat16, "meta")  # no memory: shapes only
    assert sum(p.numel() for p in model.parameters()) == shape.params
    assert model.dtype == torch.bfloat16
