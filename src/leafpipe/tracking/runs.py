"""A tracked run: one name and config, sent to every backend of `report_to` at once.

Callers see one interface whatever the backends: start a run (`start_run`), log scalars at a
step, log a summary, finish. Only process 0 of a data-parallel run logs (every process computes
the same numbers, and N copies of a run would only confuse the trackers); the others, and a
config that reports nowhere, get a run that logs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from leafpipe.tracking.spec import TrackingSpec


class Tracker(Protocol):
    """What each backend's adapter does (`leafpipe.tracking.backends`)."""

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None: ...

    def log_summary(self, summary: Mapping[str, Any]) -> None: ...

    def finish(self, failed: bool = False) -> None: ...


@dataclass(frozen=True)
class RunPlan:
    """One run before it starts: `name` (`TrackingSpec.name`), `config` (what it ran with),
    `stage` (W&B's job type, MLflow's tag), `group` (runs that belong together, e.g. one model's
    training and evaluation) and `event_dir`, where TensorBoard writes unless `tracking.dir`
    says otherwise."""

    spec: TrackingSpec
    name: str
    stage: str
    group: str
    event_dir: Path
    config: Mapping[str, Any] = field(default_factory=dict)


def _tensorboard(plan: RunPlan, resumed_at: int | None) -> Tracker:
    from leafpipe.tracking.backends import TensorBoardRun

    spec = plan.spec
    where = Path(spec.dir) / "tensorboard" / plan.name if spec.dir else plan.event_dir
    return TensorBoardRun(where, plan.config, None if resumed_at is None else resumed_at + 1)


def _wandb(plan: RunPlan, resumed_at: int | None) -> Tracker:
    from leafpipe.tracking.backends import WandbRun

    spec = plan.spec
    return WandbRun(spec.project, plan.name, plan.group, plan.stage, plan.config, spec.dir)


def _mlflow(plan: RunPlan, resumed_at: int | None) -> Tracker:
    from leafpipe.tracking.backends import MlflowRun

    spec = plan.spec
    uri = f"sqlite:///{Path(spec.dir).resolve() / 'mlflow.db'}" if spec.dir else None
    tags = {"leafpipe.stage": plan.stage, "leafpipe.group": plan.group}
    return MlflowRun(spec.project, plan.name, tags, plan.config, uri)


def _trackio(plan: RunPlan, resumed_at: int | None) -> Tracker:
    from leafpipe.tracking.backends import TrackioRun

    spec = plan.spec
    return TrackioRun(spec.project, plan.name, plan.group, plan.config, spec.dir)


# How each backend's run starts: from the plan, and the step a resumed run restarts after.
OPENERS: dict[str, Callable[[RunPlan, int | None], Tracker]] = {
    "tensorboard": _tensorboard,
    "wandb": _wandb,
    "mlflow": _mlflow,
    "trackio": _trackio,
}


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of `values` (a metrics row holds blanks, NaN and labels too)."""
    return {
        k: v
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


class TrackedRun:
    """The run on every backend; a context manager that finishes it, as failed on an error."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def log_scalars(self, scalars: Mapping[str, Any], step: int) -> None:
        """Log the finite numbers of `scalars` at optimiser step `step`."""
        finite = _finite(scalars)
        if finite:
            for tracker in self.trackers:
                tracker.log_scalars(finite, step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Log a run's end result: finite numbers, and text (None and NaN are left out)."""
        values = {k: v for k, v in summary.items() if isinstance(v, str)} | _finite(summary)
        for tracker in self.trackers:
            tracker.log_summary(values)

    def finish(self, failed: bool = False) -> None:
        trackers, self.trackers = self.trackers, []  # a second finish does nothing
        for tracker in trackers:
            tracker.finish(failed)

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.finish(failed=error is not None)


def start_run(
    plan: RunPlan | None, *, main: bool = True, resumed_at: int | None = None
) -> TrackedRun:
    """Start `plan`'s run on every backend of its `report_to`; a run that logs nothing without
    a plan, on a process other than 0 (`main` False), or when `report_to` is empty.

    `resumed_at`: the step a resumed training run restarts after (TensorBoard drops the events
    a killed run wrote after it). A missing backend raises `TrackingUnavailable` before any
    backend starts.
    """
    if plan is None or not main or not plan.spec.report_to:
        return TrackedRun([])
    plan.spec.require()
    run = TrackedRun([])
    try:
        for backend in plan.spec.report_to:
            run.trackers.append(OPENERS[backend](plan, resumed_at))
    except BaseException:
        run.finish(failed=True)  # the backends that did start
        raise
    return run
