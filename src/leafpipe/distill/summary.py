"""The training summary (training.json, docs/data-schemas.md): a pure function of a finished
run's state and facts, so what the file holds is one readable dict and the trainer only writes
it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from leafpipe.distill.checkpoints import TrainingState
from leafpipe.distill.spec import DistillSpec


def training_summary(
    spec: DistillSpec,
    state: TrainingState,
    *,
    run: dict[str, Any],
    kept: dict[str, Any],
    environment: dict[str, Any],
) -> dict[str, Any]:
    """training.json's content.

    `run`: groups_train, groups_validation, groups_with_counterfactuals, steps_per_epoch;
    `kept`: keep, kept, kept_epoch; `environment`: elapsed_s, device, processes, threads,
    versions, teacher_cache, fingerprint. The keys keep the file's order.
    """
    return {
        "objective": spec.objective,
        "settings": asdict(spec),
        "groups_train": run["groups_train"],
        "groups_validation": run["groups_validation"],
        "groups_with_counterfactuals": run["groups_with_counterfactuals"],
        "steps_per_epoch": run["steps_per_epoch"],
        "steps": state.step,
        "keep": kept["keep"],
        "kept": kept["kept"],
        "kept_epoch": kept["kept_epoch"],
        "best_epoch": state.best_epoch,
        "best_val_loss": state.best_val,
        "resumed_at_steps": state.resumed,
        "non_finite_steps": state.non_finite_steps,
        **environment,
    }
