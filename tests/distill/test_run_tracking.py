"""A distillation run's trackers get what its files hold: every metrics.csv number at its step,
then training.json, from process 0 alone."""

import json
import math

import pytest
from distill_groups import TWO_ITEM_STEPS, many_groups, read_metrics
from trackers import record_backend

from leafpipe.distill.checkpoints import TENSORBOARD, TrainingState, save_distilled
from leafpipe.distill.spec import DistillSpec
from leafpipe.distill.steplog import StepLog
from leafpipe.distill.trainer import distill
from leafpipe.tracking.runs import RunPlan
from leafpipe.tracking.spec import TrackingSpec


def _plan(backend: str, event_dir) -> RunPlan:
    spec = TrackingSpec(report_to=(backend,))
    return RunPlan(spec, "distill-kd-seed0", "distill", "kd", event_dir, {"seed": 0})


def _train(tokenizer, samples, tiny_llama, work, tracking):
    spec = DistillSpec(**TWO_ITEM_STEPS, epochs=2, val_fraction=0.5)
    groups = many_groups(samples, 8)
    return distill(
        tiny_llama(0), tiny_llama(1), tokenizer, groups, spec, 1, work_dir=work, tracking=tracking
    )


def _numbers(row: dict[str, str], prefix: str) -> dict[str, float]:
    """A metrics.csv row's finite numbers as the tracker names them."""
    skip = {"kind", "epoch", "step", "elapsed_s"}
    numbers = {f"{prefix}/{k}": float(v) for k, v in row.items() if k not in skip and v != ""}
    return {k: v for k, v in numbers.items() if math.isfinite(v)}


def test_the_tracker_gets_each_metrics_row_then_the_training_summary(
    tokenizer, samples, tiny_llama, tmp_path, monkeypatch
):
    started = record_backend(monkeypatch, "wandb")
    _train(tokenizer, samples, tiny_llama, tmp_path, _plan("wandb", tmp_path / "tb"))
    (run,) = started
    rows = read_metrics(tmp_path / "metrics.csv")
    expected = [
        (int(r["step"]), _numbers(r, "train" if r["kind"] == "step" else "epoch")) for r in rows
    ]
    assert len(run.scalars) == len(expected)
    for (step, logged), (want_step, want) in zip(run.scalars, expected, strict=True):
        assert step == want_step and logged.keys() == want.keys()
        assert all(logged[k] == pytest.approx(want[k], rel=1e-6) for k in want)
    assert any("epoch/val_loss" in logged for _, logged in run.scalars)
    training = json.loads((tmp_path / "training.json").read_text())
    (summary,) = run.summaries
    assert summary["training/steps"] == training["steps"]
    assert summary["training/kept"] == training["kept"]
    assert run.finished is False and run.resumed_at is None


def test_process_other_than_0_starts_no_tracked_run(tmp_path, monkeypatch):
    started = record_backend(monkeypatch, "wandb")
    steplog = StepLog(tmp_path, TrainingState(), 4, "kd", False, _plan("wandb", tmp_path))
    steplog.close()
    steplog.tracked.finish()
    assert started == [] and not (tmp_path / "metrics.csv").exists()


def test_tensorboard_events_travel_with_the_model_folder(tokenizer, samples, tiny_llama, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, out = tmp_path / "work", tmp_path / "model"
    student = _train(tokenizer, samples, tiny_llama, work, _plan("tensorboard", work / TENSORBOARD))
    save_distilled(student, tokenizer, work, out)
    events = EventAccumulator(str(out / TENSORBOARD)).Reload()
    steps = [r for r in read_metrics(out / "metrics.csv") if r["kind"] == "step"]
    logged = events.Scalars("train/loss")
    assert [e.step for e in logged] == [int(r["step"]) for r in steps]
    assert [e.value for e in logged] == pytest.approx([float(r["loss"]) for r in steps], rel=1e-6)


def test_without_report_to_no_event_files_are_written(tokenizer, samples, tiny_llama, tmp_path):
    _train(tokenizer, samples, tiny_llama, tmp_path, None)
    assert (tmp_path / "metrics.csv").is_file() and not (tmp_path / TENSORBOARD).exists()
