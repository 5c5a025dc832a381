"""The runs leafpipe starts: a variant's training from the distill stage, each model's scores per
seed from the report stage."""

import json

import pytest
from distill_runs import stage_inputs
from trackers import record_backend

from leafpipe import stages
from leafpipe.config import validate_config
from leafpipe.stages.specs import stage_config
from leafpipe.tracking.plans import evaluation_summary, log_evaluation
from leafpipe.tracking.spec import TrackingSpec, TrackingUnavailable

ARGS = {"variant": "leaf_instr", "model": "leaf_instr"}
DISTILL = {"epochs": 1, "global_batch": 2, "micro_batch": 1, "lr": 0.003, "val_fraction": 0.2}


def _score(model, seed, benchmark, **values) -> dict:
    """A score file's content as the grade stage writes it."""
    return {"model": model, "seed": seed, "benchmark": benchmark, "decoding": "greedy", **values}


GSM8K_KD = _score(
    "kd", 0, "gsm8k", available=True, task="math", n=50, accuracy=0.4, pass_at_k={"1": 0.4}
)
SKIPPED = _score("kd", 0, "math500", available=False, reason="no data package")


def test_the_evaluation_summary_holds_each_benchmarks_numbers_and_skips():
    summary = evaluation_summary([GSM8K_KD, SKIPPED])
    assert summary == {
        "eval/gsm8k/n": 50,
        "eval/gsm8k/accuracy": 0.4,
        "eval/gsm8k/pass_at_k/1": 0.4,
        "eval/math500/skipped": "no data package",
    }


def test_the_report_logs_one_evaluate_run_per_model_and_seed(tmp_path, monkeypatch):
    started = record_backend(monkeypatch, "mlflow")
    scores = [GSM8K_KD, SKIPPED, _score("kd", 1, "gsm8k", available=True, accuracy=0.5, n=50)]
    paths = []
    for k, score in enumerate(scores):
        paths.append(tmp_path / f"{k}.scores.json")
        paths[-1].write_text(json.dumps(score))
    config = {"report_to": ["mlflow"], "tracking": {"project": "p", "run_name": "{model}/{seed}"}}
    log_evaluation(config, paths, tmp_path / "tensorboard")
    assert [(r.plan.name, r.plan.stage, r.plan.group) for r in started] == [
        ("kd/0", "evaluate", "kd"),
        ("kd/1", "evaluate", "kd"),
    ]
    assert started[0].summaries[0]["eval/gsm8k/accuracy"] == 0.4
    assert started[1].summaries == [{"eval/gsm8k/accuracy": 0.5, "eval/gsm8k/n": 50}]
    assert started[0].plan.config["benchmarks"]["gsm8k"]["decoding"] == "greedy"
    assert started[0].plan.event_dir == tmp_path / "tensorboard" / "kd/0"
    assert all(r.finished is False for r in started)


def _stage_config(tiny_llama, tokenizer, samples, tmp_path, **settings):
    raw, args = stage_inputs(tiny_llama, tokenizer, samples, tmp_path, 4, DISTILL)
    config = validate_config({**raw, **settings})
    return stage_config("distill", config, ARGS), args


def test_the_distill_stage_names_its_run_by_variant_and_seed(
    tiny_llama, tokenizer, samples, tmp_path, monkeypatch
):
    started = record_backend(monkeypatch, "wandb")
    config, args = _stage_config(tiny_llama, tokenizer, samples, tmp_path, report_to=["wandb"])
    stages.distill(config, **args, out_dir=tmp_path / "out", threads=1)
    (run,) = started
    assert run.plan.name == "distill-leaf_instr-seed0" and run.plan.group == "leaf_instr"
    assert run.plan.config["distill"]["lr"] == 0.003 and run.scalars and run.summaries


def test_the_distill_stage_fails_on_a_missing_backend_before_loading_a_model(
    tiny_llama, tokenizer, samples, tmp_path, monkeypatch
):
    monkeypatch.setattr(TrackingSpec, "missing", lambda self: [])
    config, args = _stage_config(tiny_llama, tokenizer, samples, tmp_path, report_to=["trackio"])
    monkeypatch.setattr(TrackingSpec, "missing", lambda self: ["trackio"])
    (tmp_path / "student" / "config.json").unlink()  # loading the student would fail otherwise
    with pytest.raises(TrackingUnavailable, match="leafpipe\\[trackio\\]"):
        stages.distill(config, **args, out_dir=tmp_path / "out", threads=1)
