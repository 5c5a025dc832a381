"""What the config says about run tracking (`report_to`, `tracking`), and whether the backends it
names are installed. Torch-free: the config check imports it, so that a backend asked for but
missing fails before any job starts, not after hours of training."""

from __future__ import annotations

import importlib.util
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leafpipe.spec_fields import known_fields

# Each backend's module, whose presence says it is installed, and the pyproject extra that
# installs it (the extra's name is the backend's).
BACKEND_MODULES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "trackio": "trackio",
}
# What a run name may say: the stage that logs it, the model it is about, the replicate's seed.
RUN_NAME_FIELDS = ("stage", "model", "seed")


class TrackingUnavailable(ImportError):
    """A backend named in `report_to` is not installed."""


@dataclass(frozen=True)
class TrackingSpec:
    """`report_to`: the backends every run logs to (none: a run's own files only); `project`:
    the W&B / MLflow / Trackio project (MLflow's experiment); `run_name`: a pattern over
    `RUN_NAME_FIELDS`; `dir`: where the backends write locally (None: each backend's own
    default, and TensorBoard's event files beside the run's other files)."""

    report_to: tuple[str, ...] = ()
    project: str = "leafpipe"
    run_name: str = "{stage}-{model}-seed{seed}"
    dir: str | None = None

    def __post_init__(self) -> None:
        unknown = [b for b in self.report_to if b not in BACKEND_MODULES]
        if unknown:
            raise ValueError(
                f"report_to: unknown backend(s) {unknown}; known: {sorted(BACKEND_MODULES)}"
            )
        fields = [f for _, f, _, _ in string.Formatter().parse(self.run_name) if f is not None]
        bad = [f for f in fields if f not in RUN_NAME_FIELDS]
        if bad:
            raise ValueError(
                f"tracking.run_name {self.run_name!r}: unknown field(s) {bad}; "
                f"a run name may use {{{'}, {'.join(RUN_NAME_FIELDS)}}}"
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrackingSpec:
        """The spec of a validated config (its `report_to` and `tracking` section)."""
        section = known_fields(cls, config.get("tracking") or {})
        return cls(report_to=tuple(config.get("report_to") or ()), **section)

    def name(self, stage: str, model: str, seed: int) -> str:
        """A run's name: the pattern filled in."""
        return self.run_name.format(stage=stage, model=model, seed=seed)

    def missing(self) -> list[str]:
        """The backends of `report_to` that are not installed."""
        return [b for b in self.report_to if importlib.util.find_spec(BACKEND_MODULES[b]) is None]

    def require(self) -> None:
        """Raise `TrackingUnavailable`, naming the pip command, when a backend is missing."""
        missing = self.missing()
        if missing:
            names = ", ".join(missing)
            raise TrackingUnavailable(
                f"report_to names {names}, not installed: "
                f"pip install 'leafpipe[{','.join(missing)}]', or take {names} out of report_to"
            )
