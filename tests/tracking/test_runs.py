"""One run, every backend: what reaches a backend, rank 0 alone logging, and failures."""

from pathlib import Path

import pytest
from trackers import record_backend

from leafpipe.tracking import runs
from leafpipe.tracking.runs import RunPlan, start_run
from leafpipe.tracking.spec import TrackingSpec, TrackingUnavailable


def _plan(*backends: str) -> RunPlan:
    spec = TrackingSpec(report_to=backends)
    return RunPlan(spec, "distill-kd-seed0", "distill", "kd", Path("unused"), {"seed": 0})


def test_only_finite_numbers_reach_the_backends_and_a_finish_is_final(monkeypatch):
    wandb = record_backend(monkeypatch, "wandb")
    with start_run(_plan("wandb"), resumed_at=7) as run:
        run.log_scalars({"train/loss": 0.5, "train/val_loss": None, "bad": float("nan")}, 3)
        run.log_scalars({"train/val_loss": float("inf")}, 4)  # nothing finite: no call
        run.log_summary({"training/kept": "last", "training/steps": 4, "training/x": None})
    (tracker,) = wandb
    assert tracker.resumed_at == 7 and tracker.plan.name == "distill-kd-seed0"
    assert tracker.scalars == [(3, {"train/loss": 0.5})]
    assert tracker.summaries == [{"training/kept": "last", "training/steps": 4}]
    assert tracker.finished is False
    run.finish(failed=True)  # already finished: nothing changes
    assert tracker.finished is False


def test_a_run_that_fails_is_finished_as_failed(monkeypatch):
    mlflow = record_backend(monkeypatch, "mlflow")
    with pytest.raises(RuntimeError, match="diverged"), start_run(_plan("mlflow")):
        raise RuntimeError("diverged")
    assert mlflow[0].finished is True


def test_only_process_0_logs_and_no_report_to_starts_nothing(monkeypatch):
    wandb = record_backend(monkeypatch, "wandb")
    for run in (start_run(_plan("wandb"), main=False), start_run(_plan()), start_run(None)):
        run.log_scalars({"train/loss": 1.0}, 1)
        run.finish()
    assert wandb == []
    start_run(_plan("wandb"), main=True).finish()
    assert len(wandb) == 1


def test_a_missing_backend_fails_before_any_backend_starts(monkeypatch):
    wandb = record_backend(monkeypatch, "wandb")
    monkeypatch.setattr(TrackingSpec, "missing", lambda self: ["trackio"])
    with pytest.raises(TrackingUnavailable, match="trackio"):
        start_run(_plan("wandb", "trackio"))
    assert wandb == []


def test_when_a_backend_cannot_start_the_ones_already_started_are_finished(monkeypatch):
    wandb = record_backend(monkeypatch, "wandb")

    def refuse(plan, resumed_at):
        raise ConnectionError("no server")

    monkeypatch.setitem(runs.OPENERS, "mlflow", refuse)
    with pytest.raises(ConnectionError):
        start_run(_plan("wandb", "mlflow"))
    assert wandb[0].finished is True
