"""The report's distillation settings: per trained model, the loss it was trained with, as its
training.json records it (docs/data-schemas.md).

Accuracies of distilled models are only comparable under the same loss, and a run whose teacher
came from a top-k cache did not train on the paper's full-vocabulary divergence, so the report
names, for every trained model, its divergence, temperature, the code that computed it
(`KDSpec.backend`) and, with a cached teacher, k and `KDSpec.topk_mode`, labelled as an
approximation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from leafpipe.report.tables import markdown_table

_DIVERGENCE = {"forward_kl": "KL", "reverse_kl": "KL", "jsd": "JSD"}


def _loss(kd: Mapping[str, Any]) -> str:
    kind = kd["kind"]
    return f"{kind} (β = {kd['beta']})" if kind == "jsd" else kind


def _teacher(kd: Mapping[str, Any], cache: Mapping[str, Any] | None) -> str:
    """The full teacher, or its top-k cache named as an approximation."""
    if cache is None:
        return "full teacher (exact full-vocabulary loss)"
    mode = kd.get("topk_mode", "renormalised")  # the only mode before topk_mode existed
    return (
        f"top-k (k={cache['k']}, {mode}): an approximation of the full-vocabulary "
        f"{_DIVERGENCE[kd['kind']]}"
    )


def kd_settings_cells(training: Mapping[str, Any]) -> list[str]:
    """The loss, τ, KD backend and teacher of one training.json."""
    if training["objective"] != "kd":
        return ["cross-entropy on the responses", "–", "–", "no teacher"]
    kd = training["settings"]["kd"]
    return [
        _loss(kd),
        f"{kd['temperature']:g}",
        kd.get("backend", "chunked"),  # the only backend before `backend` existed
        _teacher(kd, training.get("teacher_cache")),
    ]


def kd_settings_section(
    training: Mapping[str, Sequence[Mapping[str, Any]]], model_labels: Mapping[str, str]
) -> list[str]:
    """The section: one row per trained model, or per (model, seeds) when its seeds' settings
    differ. `training`: per model, the training.json of each of its seeds, in seed order; no
    model, no section."""
    rows = []
    for model, records in training.items():
        label = model_labels.get(model, model)
        cells = [kd_settings_cells(record) for record in records]
        distinct = [c for i, c in enumerate(cells) if c not in cells[:i]]
        for c in distinct:
            seeds = [records[i]["settings"]["seed"] for i, other in enumerate(cells) if other == c]
            named = label if len(distinct) == 1 else f"{label} (seed {', '.join(map(str, seeds))})"
            rows.append([named, *c])
    if not rows:
        return []
    header = ["Model", "Loss", "τ", "KD backend", "Teacher"]
    return ["## Distillation loss", "", *markdown_table(header, rows), ""]
