"""The runs leafpipe tracks: one per distilled variant and seed (its training), and one per
evaluated model and seed (its benchmark scores), with the same `group` (the model's name) so a
tracker shows a variant's training and evaluation side by side.

Evaluation is logged by the report stage, not by each grade job: the report runs once, after
every score file exists, in one process, so each (model, seed) run is written whole and once,
whereas the grade jobs run in parallel, one per model and benchmark, and would all write into
the same runs at the same time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from leafpipe.files.atomic import read_json
from leafpipe.tracking.backends import flat
from leafpipe.tracking.runs import RunPlan, start_run
from leafpipe.tracking.spec import TrackingSpec

log = logging.getLogger(__name__)

# A score file's settings, which go to the evaluation run's config rather than its summary.
SCORE_SETTINGS = ("batch_size", "max_new_tokens", "decoding", "source")


def distill_plan(config: Mapping[str, Any], variant: str, event_dir: Path) -> RunPlan:
    """The run of one variant's training for the replicate's seed, its config the `distill`
    section. Raises `TrackingUnavailable` when a backend is missing, so the stage fails before
    it loads a model."""
    spec = TrackingSpec.from_config(config)
    spec.require()
    seed = config["seed"]
    return RunPlan(
        spec,
        name=spec.name("distill", variant, seed),
        stage="distill",
        group=variant,
        event_dir=event_dir,
        config={"variant": variant, "seed": seed, "distill": dict(config["distill"])},
    )


def _runs(scores: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], list[Mapping[str, Any]]]:
    """Score records by (model, seed), in the order given."""
    runs: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for score in scores:
        runs.setdefault((score["model"], score["seed"]), []).append(score)
    return runs


def evaluation_summary(scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One run's summary from its score records: `eval/<benchmark>/<metric>` for every number
    of an evaluated benchmark (accuracy, ci_low, ci_high, n, pass_at_k/<k>, f1, ...), and
    `eval/<benchmark>/skipped` with the reason for one whose data was absent."""
    summary: dict[str, Any] = {}
    for score in scores:
        prefix = f"eval/{score['benchmark']}/"
        if not score["available"]:
            summary[prefix + "skipped"] = score.get("reason", "")
            continue
        values = {k: v for k, v in score.items() if k not in ("model", "seed", "benchmark")}
        for key, value in flat(values).items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if key not in SCORE_SETTINGS and number:
                summary[prefix + key] = value
    return summary


def _evaluation_config(
    model: str, seed: int, scores: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What an evaluation run ran with: its model, seed and each benchmark's decoding."""
    benchmarks = {s["benchmark"]: {k: s.get(k) for k in SCORE_SETTINGS} for s in scores}
    return {"model": model, "seed": seed, "benchmarks": benchmarks}


def log_evaluation(
    config: Mapping[str, Any], score_paths: Sequence[str | Path], event_root: Path
) -> None:
    """Log each (model, seed)'s benchmark scores, from the grade stage's score files, as the
    summary of an `evaluate` run; TensorBoard's events under `event_root/<run name>` unless
    `tracking.dir` is set. Nothing without `report_to`."""
    spec = TrackingSpec.from_config(config)
    if not spec.report_to:
        return
    scores = [read_json(p) for p in score_paths]
    for (model, seed), records in _runs(scores).items():
        name = spec.name("evaluate", model, seed)
        plan = RunPlan(
            spec,
            name=name,
            stage="evaluate",
            group=model,
            event_dir=event_root / name,
            config=_evaluation_config(model, seed, records),
        )
        with start_run(plan) as run:
            run.log_summary(evaluation_summary(records))
    log.info("evaluation scores sent to %s", ", ".join(spec.report_to))
