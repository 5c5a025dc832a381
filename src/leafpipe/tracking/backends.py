"""One adapter per tracking backend, each over the backend's documented public API and each
with the same three methods (`leafpipe.tracking.runs.Tracker`). The backend is imported when a
run starts, never before: a run that reports nowhere needs none of them installed.

- TensorBoard: `torch.utils.tensorboard.SummaryWriter` (add_scalar, add_text, close).
- Weights & Biases: `wandb.init(...)` -> Run (`log(data, step=)`, `summary.update`, `finish`);
  offline with `WANDB_MODE=offline` (or `wandb offline`), synced later with `wandb sync`.
- MLflow: `mlflow.tracking.MlflowClient` (create_run, log_batch, set_tags, set_terminated): a
  client of its own, not the module-level active run, so that one process may hold several runs
  one after another without leaking state; the tracking URI from `MLFLOW_TRACKING_URI` or MLflow's
  default unless `tracking.dir` gives a SQLite file.
- Trackio: `trackio.init(...)`, `trackio.log(metrics, step=)`, `trackio.finish()`; local SQLite
  files under `TRACKIO_DIR` (read when trackio is first imported).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Scalars = Mapping[str, float]


def flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of `a/b` keys (MLflow params and tags are flat)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat(value, f"{name}/"))
        else:
            out[name] = value
    return out


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in values.items() if isinstance(v, int | float)}


class TensorBoardRun:
    """Event files in `log_dir`; `purge_step` drops what a killed run logged from that step on
    (the steps a resumed run does again)."""

    def __init__(self, log_dir: Path, config: Mapping[str, Any], purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)
        self.step = 0
        if purge_step is None:  # the config once per run, not once per resumed session
            text = json.dumps(dict(config), indent=2, sort_keys=True, default=str)
            self.writer.add_text("config", f"```\n{text}\n```", 0)

    def log_scalars(self, scalars: Scalars, step: int) -> None:
        self.step = step
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Numbers as scalars at the last step logged (a summary has no step of its own)."""
        for name, value in _numbers(summary).items():
            self.writer.add_scalar(name, value, self.step)

    def finish(self, failed: bool = False) -> None:
        self.writer.close()


class WandbRun:
    """A W&B run; `dir` None leaves W&B its own default (WANDB_DIR, else ./wandb)."""

    def __init__(
        self, project: str, name: str, group: str, job_type: str, config: Any, dir: str | None
    ) -> None:
        import wandb

        self.run = wandb.init(
            project=project,
            name=name,
            group=group,
            job_type=job_type,
            config=dict(config),
            dir=dir,
        )

    def log_scalars(self, scalars: Scalars, step: int) -> None:
        self.run.log(dict(scalars), step=step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self.run.summary.update(dict(summary))

    def finish(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MlflowRun:
    """An MLflow run in experiment `project`; the config becomes its params, its stage and
    group tags, a summary's numbers metrics and its text tags."""

    PARAM_CHARS = 6000  # MLflow's limit on a param's value
    PARAMS_PER_BATCH = 100  # and on the params of one log_batch request

    def __init__(
        self,
        project: str,
        name: str,
        tags: Mapping[str, str],
        config: Mapping[str, Any],
        tracking_uri: str | None,
    ) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(project)
        experiment = found.experiment_id if found else self.client.create_experiment(project)
        self.run_id = self.client.create_run(experiment, run_name=name, tags=dict(tags)).info.run_id
        params = [Param(k, str(v)[: self.PARAM_CHARS]) for k, v in flat(config).items()]
        for start in range(0, len(params), self.PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + self.PARAMS_PER_BATCH])
        self.step = 0

    def log_scalars(self, scalars: Scalars, step: int) -> None:
        from mlflow.entities import Metric

        self.step = step
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        numbers = _numbers(summary)
        self.log_scalars(numbers, self.step)
        text = {k: str(v) for k, v in summary.items() if k not in numbers}
        for key, value in text.items():
            self.client.set_tag(self.run_id, key, value)

    def finish(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


class TrackioRun:
    """A Trackio run, local unless the environment names a Space. Trackio has no summary of its
    own: a summary's numbers are logged at the last step."""

    def __init__(
        self, project: str, name: str, group: str, config: Mapping[str, Any], dir: str | None
    ) -> None:
        if dir is not None:
            _trackio_dir(dir)
        import trackio

        self.trackio = trackio
        trackio.init(project=project, name=name, group=group, config=dict(config))
        self.step = 0

    def log_scalars(self, scalars: Scalars, step: int) -> None:
        self.step = step
        self.trackio.log(dict(scalars), step=step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self.trackio.log(_numbers(summary), step=self.step)

    def finish(self, failed: bool = False) -> None:
        self.trackio.finish()


def _trackio_dir(dir: str) -> None:
    """Point Trackio at `dir`: it reads TRACKIO_DIR once, when first imported."""
    import sys

    loaded = sys.modules.get("trackio.utils")
    if loaded is not None and Path(loaded.TRACKIO_DIR) != Path(dir):
        log.warning(
            "trackio was imported before this run and writes to %s, not tracking.dir %s",
            loaded.TRACKIO_DIR,
            dir,
        )
    os.environ["TRACKIO_DIR"] = str(dir)
