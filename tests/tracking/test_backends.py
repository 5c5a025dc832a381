"""Each backend for real, offline, writing under tmp_path: the numbers land where the backend
keeps them. Skipped where a backend is not installed (`pip install -e '.[tracking]'`)."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from leafpipe.tracking.runs import RunPlan, start_run
from leafpipe.tracking.spec import TrackingSpec

CONFIG = {"variant": "kd", "seed": 0, "distill": {"lr": 0.001, "kd": {"temperature": 1.0}}}
STEPS = {1: 2.5, 2: 1.25, 3: 0.75}


def _log(backend: str, dir: Path | None, event_dir: Path | None = None) -> None:
    """A run like a distillation's: three steps of train/loss, then its summary."""
    spec = TrackingSpec(
        report_to=(backend,), project="leafpipe-test", dir=str(dir) if dir else None
    )
    plan = RunPlan(spec, "distill-kd-seed0", "distill", "kd", event_dir or Path("unused"), CONFIG)
    with start_run(plan) as run:
        for step, loss in STEPS.items():
            run.log_scalars({"train/loss": loss}, step)
        run.log_summary({"training/best_val_loss": 0.5, "training/kept": "last"})


def test_tensorboard_writes_event_files_with_every_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _log("tensorboard", None, event_dir=tmp_path / "tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert {(e.step, e.value) for e in events.Scalars("train/loss")} == set(STEPS.items())
    # the summary at the last step logged
    assert [(e.step, e.value) for e in events.Scalars("training/best_val_loss")] == [(3, 0.5)]


def test_tensorboard_honours_tracking_dir_with_a_folder_per_run(tmp_path):
    _log("tensorboard", tmp_path, event_dir=tmp_path / "not-here")
    assert list((tmp_path / "tensorboard" / "distill-kd-seed0").glob("events.out.tfevents.*"))
    assert not (tmp_path / "not-here").exists()


@pytest.mark.slow  # creating MLflow's database takes ~15 s
def test_mlflow_logs_to_a_sqlite_file_in_tracking_dir(tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("alembic")
    from mlflow.tracking import MlflowClient

    _log("mlflow", tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("leafpipe-test").experiment_id])
    assert run.info.run_name == "distill-kd-seed0" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert {(m.step, m.value) for m in history} == set(STEPS.items())
    assert run.data.metrics["training/best_val_loss"] == 0.5
    assert run.data.params["distill/kd/temperature"] == "1.0"
    assert run.data.tags["training/kept"] == "last" and run.data.tags["leafpipe.stage"] == "distill"


def test_wandb_offline_writes_its_run_file_under_tracking_dir(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _log("wandb", tmp_path)
    wandb.teardown()  # W&B's service writes the file on its own time; a job's exit waits for it
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    # W&B's offline file is its own binary record log (read by `wandb sync`); the names and the
    # run's identity appear in it as plain strings.
    data = run_file.read_bytes()
    for text in (b"distill-kd-seed0", b"leafpipe-test", b"train/loss", b"training/best_val_loss"):
        assert text in data


_TRACKIO = """
import sys
sys.path[:0] = {paths!r}
from pathlib import Path
from test_backends import _log
_log("trackio", Path({dir!r}))
"""


def test_trackio_writes_its_local_database_in_tracking_dir(tmp_path):
    # Trackio reads TRACKIO_DIR when first imported: a fresh process, as a job is.
    script = _TRACKIO.format(paths=[str(Path(__file__).parent)], dir=str(tmp_path))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("TRACKIO_DIR", None)
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    with sqlite3.connect(tmp_path / "leafpipe-test.db") as db:
        rows = db.execute("SELECT run_name, step, metrics FROM metrics ORDER BY id").fetchall()
    logged = [(name, step, json.loads(metrics)) for name, step, metrics in rows]
    assert [(s, m["train/loss"]) for _, s, m in logged if "train/loss" in m] == list(STEPS.items())
    assert {name for name, _, _ in logged} == {"distill-kd-seed0"}
    assert (3, {"training/best_val_loss": 0.5}) in [(s, m) for _, s, m in logged]
