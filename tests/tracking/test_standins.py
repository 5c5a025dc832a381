"""The W&B, MLflow and Trackio adapters against stand-in modules (tests/support/
tracker_standins.py), so that they are tested where the real packages are not installed; where
they are, the stand-ins' parameter names are checked against the real API."""

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

import pytest
import tracker_standins
from tracker_standins import install_mlflow, install_trackio, install_wandb

from leafpipe.tracking.runs import RunPlan, start_run
from leafpipe.tracking.spec import TrackingSpec

CONFIG = {"seed": 0, "distill": {"lr": 0.001, "kd": {"temperature": 2.0}}}


def _run(backend: str, dir: str | None = None, fail: bool = False) -> None:
    spec = TrackingSpec(report_to=(backend,), project="proj", dir=dir)
    plan = RunPlan(spec, "distill-kd-seed0", "distill", "kd", Path("unused"), CONFIG)
    with start_run(plan) as run:
        run.log_scalars({"train/loss": 2.0}, 1)
        run.log_scalars({"train/loss": 1.0, "epoch/val_loss": 1.5}, 2)
        run.log_summary({"training/best_val_loss": 1.5, "training/kept": "best"})
        if fail:
            raise RuntimeError("diverged")


@pytest.fixture
def installed(monkeypatch):
    """Every backend counts as installed: the stand-ins are."""
    monkeypatch.setattr(TrackingSpec, "missing", lambda self: [])


def test_wandb_gets_the_run_its_steps_and_summary(monkeypatch, installed):
    started = install_wandb(monkeypatch)
    _run("wandb", dir="/somewhere")
    with pytest.raises(RuntimeError):
        _run("wandb", fail=True)
    done, failed = started
    expected = dict(project="proj", name="distill-kd-seed0", group="kd", job_type="distill")
    assert done.settings == {**expected, "config": CONFIG, "dir": "/somewhere"}
    assert done.history == [
        (1, {"train/loss": 2.0}),
        (2, {"train/loss": 1.0, "epoch/val_loss": 1.5}),
    ]
    assert done.summary == {"training/best_val_loss": 1.5, "training/kept": "best"}
    assert (done.exit_code, failed.exit_code, failed.settings["dir"]) == (0, 1, None)


def test_mlflow_gets_an_experiment_params_metrics_and_tags(monkeypatch, installed, tmp_path):
    clients = install_mlflow(monkeypatch)
    _run("mlflow", dir=str(tmp_path))
    with pytest.raises(RuntimeError):
        _run("mlflow", fail=True)
    done, failed = clients
    assert done.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert failed.tracking_uri is None  # MLFLOW_TRACKING_URI, or MLflow's default
    (run,) = done.runs.values()
    assert run["name"] == "distill-kd-seed0" and done.experiments == {"proj": run["experiment"]}
    assert run["tags"] == {
        "leafpipe.stage": "distill",
        "leafpipe.group": "kd",
        "training/kept": "best",
    }
    assert sorted(run["params"]) == [
        ("distill/kd/temperature", "2.0"),
        ("distill/lr", "0.001"),
        ("seed", "0"),
    ]
    logged = [(m.key, m.value, m.step) for m in run["metrics"]]
    assert logged == [
        ("train/loss", 2.0, 1),
        ("train/loss", 1.0, 2),
        ("epoch/val_loss", 1.5, 2),
        ("training/best_val_loss", 1.5, 2),  # the summary at the last step
    ]
    assert run["status"] == "FINISHED"
    assert next(iter(failed.runs.values()))["status"] == "FAILED"


def test_trackio_gets_the_run_its_steps_and_the_summarys_numbers(monkeypatch, installed, tmp_path):
    monkeypatch.delitem(sys.modules, "trackio.utils", raising=False)
    monkeypatch.delenv("TRACKIO_DIR", raising=False)
    calls = install_trackio(monkeypatch)
    _run("trackio", dir=str(tmp_path))
    assert os.environ["TRACKIO_DIR"] == str(tmp_path)  # read by trackio when first imported
    assert calls == [
        ("init", dict(project="proj", name="distill-kd-seed0", group="kd", config=CONFIG)),
        ("log", (1, {"train/loss": 2.0})),
        ("log", (2, {"train/loss": 1.0, "epoch/val_loss": 1.5})),
        ("log", (2, {"training/best_val_loss": 1.5})),  # no summary of its own: the last step
        ("finish", None),
    ]


def _parameters(function) -> set[str]:
    return set(inspect.signature(function).parameters) - {"self"}


@pytest.mark.parametrize(
    ("module", "attribute", "standin"),
    [
        ("wandb.sdk.wandb_run", "Run.log", tracker_standins.WandbRun.log),
        ("wandb.sdk.wandb_run", "Run.finish", tracker_standins.WandbRun.finish),
        ("wandb", "init", tracker_standins.Wandb.init),
        ("trackio", "init", tracker_standins.Trackio.init),
        ("trackio", "log", tracker_standins.Trackio.log),
        ("trackio", "finish", tracker_standins.Trackio.finish),
        *[
            (
                "mlflow.tracking",
                f"MlflowClient.{name}",
                getattr(tracker_standins.MlflowClient, name),
            )
            for name in (
                "__init__",
                "get_experiment_by_name",
                "create_experiment",
                "create_run",
                "log_batch",
                "set_tag",
                "set_terminated",
            )
        ],
    ],
)
def test_the_standins_take_the_real_apis_parameter_names(module, attribute, standin):
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{module} is not installed")
    real = importlib.import_module(module)
    for part in attribute.split("."):
        real = getattr(real, part)
    assert _parameters(standin) <= _parameters(real)
