"""Stand-ins for the W&B, MLflow and Trackio modules, for machines without them (the test extra
leaves them out for their size): the calls leafpipe's adapters make, with the real API's
parameter names, recorded.

The APIs: https://docs.wandb.ai/ref/python/sdk/functions/init/ (`wandb.init`, `Run.log`,
`Run.summary`, `Run.finish`) and https://mlflow.org/docs/latest/api_reference/python_api/
mlflow.client.html (`MlflowClient.create_experiment`, `create_run`, `log_batch`, `set_tag`,
`set_terminated`), https://huggingface.co/docs/trackio (`trackio.init`, `log`, `finish`);
tests/tracking/test_standins.py checks the names against the real modules
where they are installed.
"""

from __future__ import annotations

import sys
import types
from typing import Any, NamedTuple

import pytest


class WandbRun:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.history: list[tuple[int | None, dict[str, Any]]] = []
        self.summary: dict[str, Any] = {}
        self.exit_code: int | None = None

    def log(self, data: dict[str, Any], step: int | None = None, commit: Any = None) -> None:
        self.history.append((step, dict(data)))

    def finish(self, exit_code: int | None = None) -> None:
        self.exit_code = exit_code


class Wandb(types.ModuleType):
    """A `wandb` module whose `init` records the runs it starts (`started`)."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.started: list[WandbRun] = []

    def init(
        self,
        *,
        project: str | None = None,
        name: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        config: Any = None,
        dir: str | None = None,
    ) -> WandbRun:
        settings = dict(project=project, name=name, group=group, job_type=job_type)
        self.started.append(WandbRun({**settings, "config": config, "dir": dir}))
        return self.started[-1]


def install_wandb(monkeypatch: pytest.MonkeyPatch) -> list[WandbRun]:
    """The `Wandb` stand-in as `wandb`; returns the runs it starts."""
    module = Wandb()
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module.started


class Metric(NamedTuple):
    key: str
    value: float
    timestamp: int
    step: int


class Param(NamedTuple):
    key: str
    value: str


class MlflowClient:
    """One client's store: experiments by name, and each run's record."""

    stores: list[MlflowClient] = []

    def __init__(self, tracking_uri: str | None = None, registry_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiments: dict[str, str] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        MlflowClient.stores.append(self)

    def get_experiment_by_name(self, name: str) -> Any:
        found = self.experiments.get(name)
        return types.SimpleNamespace(experiment_id=found) if found else None

    def create_experiment(self, name: str, artifact_location: Any = None, tags: Any = None) -> str:
        self.experiments[name] = str(len(self.experiments))
        return self.experiments[name]

    def create_run(
        self, experiment_id: str, start_time: Any = None, tags: Any = None, run_name: Any = None
    ) -> Any:
        run_id = f"run{len(self.runs)}"
        self.runs[run_id] = dict(
            experiment=experiment_id, name=run_name, tags=dict(tags or {}), metrics=[], params=[]
        )
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id=run_id))

    def log_batch(
        self,
        run_id: str,
        metrics: Any = (),
        params: Any = (),
        tags: Any = (),
        synchronous: Any = None,
    ) -> None:
        self.runs[run_id]["metrics"] += list(metrics)
        self.runs[run_id]["params"] += list(params)

    def set_tag(self, run_id: str, key: str, value: Any, synchronous: Any = None) -> None:
        self.runs[run_id]["tags"][key] = value

    def set_terminated(self, run_id: str, status: str | None = None, end_time: Any = None) -> None:
        self.runs[run_id]["status"] = status


def install_mlflow(monkeypatch: pytest.MonkeyPatch) -> list[MlflowClient]:
    """`mlflow`, `mlflow.tracking` and `mlflow.entities` modules over `MlflowClient`; returns the
    clients made."""
    monkeypatch.setattr(MlflowClient, "stores", [])
    modules = {name: types.ModuleType(name) for name in ("mlflow", "mlflow.tracking")}
    modules["mlflow.entities"] = types.ModuleType("mlflow.entities")
    modules["mlflow.tracking"].MlflowClient = MlflowClient  # type: ignore[attr-defined]
    modules["mlflow.entities"].Metric = Metric  # type: ignore[attr-defined]
    modules["mlflow.entities"].Param = Param  # type: ignore[attr-defined]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return MlflowClient.stores


class Trackio(types.ModuleType):
    """A `trackio` module: one run at a time, as Trackio's module-level API; `calls` in order."""

    def __init__(self) -> None:
        super().__init__("trackio")
        self.calls: list[tuple[str, Any]] = []

    def init(
        self,
        project: str,
        name: str | None = None,
        group: str | None = None,
        config: dict | None = None,
    ) -> None:
        self.calls.append(("init", dict(project=project, name=name, group=group, config=config)))

    def log(self, metrics: dict, step: int | None = None) -> None:
        self.calls.append(("log", (step, dict(metrics))))

    def finish(self) -> None:
        self.calls.append(("finish", None))


def install_trackio(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """The `Trackio` stand-in as `trackio`; returns its calls."""
    module = Trackio()
    monkeypatch.setitem(sys.modules, "trackio", module)
    return module.calls
