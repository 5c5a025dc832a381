"""The first GPU run's benchmark (bench/gpu_first_run.py) on the CPU: every phase runs through the
library and gets a row; the real shape's model is the one the planner sizes. And the script that
runs it with the other GPU benchmarks (bench/gpu_first_run.sh), with a stand-in Python: its steps,
their time limits, and the targets' summary."""

import importlib.util
import json
import math
import os
import re
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


SCRIPT = BENCH.with_suffix(".sh")
STEPS = [  # what the script runs, in order: each command's first words and the options it needs
    ("-", ()),  # the versions, into env.txt
    ("bench/score.py", ("--device cuda", "--shape llama-3.1-8b", "--json")),
    ("bench/distill.py", ("--device cuda", "--vocab 128256 --seq 8192", "--json")),
    ("bench/distill.py", ("--device cuda", "--gpu-step", "--json")),
    ("bench/score.py", ("--device cuda", "--shape llama-3.2-1b", "--json")),
    ("bench/gpu_first_run.py", ("--device cuda", "--shape llama-3.2-1b")),
    ("-m snakemake", ("--workflow-profile profiles/local-gpu", "--resources gpu=1")),
    ("bench/gpu_targets.py", ("--score", "--kd")),
]


def run_script(tmp_path: Path, total_s: int) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """bench/gpu_first_run.sh with a stand-in Python that records each command and fails it; only
    bench/gpu_targets.py, torch-free, really runs. Returns the run and the recorded commands."""
    calls = tmp_path / "calls"
    calls.unlink(missing_ok=True)
    python = tmp_path / "python"
    python.write_text(
        f'#!/bin/sh\necho "$*" >>{calls}\n'
        f'case "$1" in bench/gpu_targets.py) exec {sys.executable} "$@";; esac\nexit 3\n'
    )
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "OUT": str(tmp_path / "out")}
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        env={**env, "GPU_RUN_TOTAL_S": str(total_s)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, calls.read_text().splitlines()


def test_the_script_runs_every_step_in_turn_and_reports_targets_missing_when_steps_fail(tmp_path):
    done, commands = run_script(tmp_path, total_s=530)
    assert done.returncode == 0, done.stderr
    assert len(commands) == len(STEPS)
    for command, (start, options) in zip(commands, STEPS):
        assert command.startswith(start) and all(o in command for o in options), command
    assert "score-8b: exit 3 (limit 110 s; log score-8b.log)" in done.stdout
    targets = (tmp_path / "out" / "targets.txt").read_text().splitlines()
    assert [line.split()[0] for line in targets] == ["MISSING", "MISSING"]


def test_steps_are_cut_to_the_runs_time_and_skipped_when_it_is_spent(tmp_path):
    done, commands = run_script(tmp_path, total_s=60)  # 30 s of it kept for stopping and the end
    limits = [int(x) for x in re.findall(r": exit 3 \(limit (\d+) s", done.stdout)]
    assert limits and all(limit <= 30 for limit in limits)
    done, commands = run_script(tmp_path, total_s=35)
    assert "score-8b: not run: the run's time is spent" in done.stdout
    assert [c.split()[0] for c in commands] == ["-", "bench/gpu_targets.py"]
