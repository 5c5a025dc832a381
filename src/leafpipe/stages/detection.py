"""Stage 1 of LeaF: gradient scores per shard, confounder detection, its inspection,
counterfactuals and their validity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from leafpipe.files.atomic import read_json, read_jsonl, write_json, write_jsonl
from leafpipe.files.provenance import read_parquet, write_parquet
from leafpipe.models.hub_options import hub_options
from leafpipe.stages.common import _pick, _threads, log, shard_rows

# The detection keys that are not DetectSpec's: per-domain overrides (read by `detect`), and two
# behaviours of detection.rules that scoring and the counterfactuals apply (`_detection_rule`).
DETECT_NOT_FOR = ("domains", "widen_words", "response_scopes")


def _detection_rule(detection: dict[str, Any], key: str) -> Any:
    """One behaviour that detection.rules selects (leafpipe.detect.rules), from `rules` and that
    behaviour's own key alone: a stage reads (and its rule tracks) no other."""
    from leafpipe.detect.rules import resolved_rules

    return resolved_rules({"rules": detection.get("rules"), key: detection.get(key)})[key]


def score(
    config: dict[str, Any],
    model: str,
    model_dir: str | Path,
    corpus_path: str | Path,
    out_path: str | Path,
    shard: int | str = 0,
    threads: int | None = None,
) -> None:
    """Score one shard of the corpus with one model (bf16 on a GPU when there is one)."""
    from leafpipe.detect.scoring import ScoreSpec, score_samples
    from leafpipe.models.loading import load_placed_model

    _threads(threads)
    scoring, detection = config["scoring"], config["detection"]
    spec = _pick(
        ScoreSpec,
        {
            **scoring,
            "response_level": detection["response_level"],
            "response_scopes": _detection_rule(detection, "response_scopes"),
        },
        not_for=("shards",),  # the workflow's number of score jobs, read below
    )
    rows = shard_rows(read_jsonl(corpus_path), int(shard), scoring["shards"])
    loaded, tok = load_placed_model(model_dir, **hub_options(config, model))
    frame = score_samples(loaded, tok, rows, spec)
    write_parquet(frame, out_path, inputs=[model_dir, corpus_path])
    log.info(
        "scored %d samples (shard %s of %d), %d tokens",
        len(rows),
        shard,
        scoring["shards"],
        len(frame),
    )


def gather_scores(shard_paths: Sequence[str | Path], out_path: str | Path) -> None:
    """Concatenate shard scores in shard order into one file."""
    frame = pd.concat([read_parquet(p) for p in shard_paths], ignore_index=True)
    write_parquet(frame, out_path, inputs=shard_paths)
    log.info(
        "gathered %d shards: %d samples, %d tokens",
        len(shard_paths),
        frame["sample_id"].nunique(),
        len(frame),
    )


def detect(
    config: dict[str, Any],
    teacher_scores: str | Path,
    student_scores: str | Path,
    corpus_path: str | Path,
    out_tokens: str | Path,
    out_metrics: str | Path,
) -> None:
    from leafpipe.detect.confounders import DetectSpec, detection_metrics
    from leafpipe.detect.confounders import detect as detect_tokens

    settings = config["detection"]
    spec = _pick(DetectSpec, settings, not_for=DETECT_NOT_FOR)
    domain_specs = {
        name: _pick(DetectSpec, {**settings, **over}, not_for=DETECT_NOT_FOR)
        for name, over in settings["domains"].items()
    }
    tokens = detect_tokens(
        read_parquet(teacher_scores),
        read_parquet(student_scores),
        read_jsonl(corpus_path),
        spec,
        domain_specs,
    )
    metrics = detection_metrics(tokens, spec)
    inputs = [teacher_scores, student_scores, corpus_path]
    write_parquet(tokens, out_tokens, inputs=inputs)
    write_json(metrics, out_metrics, inputs=inputs)
    log.info(
        "detection: precision %.3f recall %.3f (base rate %.3f)",
        metrics["precision"],
        metrics["recall"],
        metrics["base_rate"],
    )


def inspect(
    config: dict[str, Any],
    tokens_path: str | Path,
    metrics_path: str | Path,
    out_html: str | Path,
    out_hist: str | Path,
    out_sweep_csv: str | Path,
    out_sweep_png: str | Path,
    out_variants: str | Path,
    out_by_kind: str | Path,
) -> None:
    """Inspect detection: an HTML page of scored tokens, score histograms, every score variant
    side by side (variants.csv, by_kind.csv) and each variant's percentile sweep."""
    from leafpipe.detect import inspection
    from leafpipe.detect.confounders import DetectSpec
    from leafpipe.detect.quality import variant_comparison, write_csv

    spec = _pick(DetectSpec, config["detection"], not_for=DETECT_NOT_FOR)
    settings = config["inspection"]
    if config["detection"]["domains"]:
        log.warning(
            "inspect: the sweep and the score variants apply the default detection settings to "
            "every sample; per-domain overrides are not applied"
        )
    tokens = read_parquet(tokens_path)
    metrics = read_json(metrics_path)
    # The configured percentile is always swept, so the plot's marker and the report's table
    # show the same numbers as metrics.json.
    percentiles = sorted({float(p) for p in settings["percentiles"]} | {float(spec.percentile)})
    comparison = variant_comparison(tokens, spec, percentiles)
    for frame, path in (
        (comparison.variants, out_variants),
        (comparison.by_kind, out_by_kind),
        (comparison.sweep, out_sweep_csv),
    ):
        write_csv(frame, path)
    inspection.write_sweep_plot(
        comparison.sweep,
        out_sweep_png,
        configured=spec.percentile,
        base_rate=metrics.get("base_rate") if metrics.get("n_planted") else None,
        configured_score=spec.score,
    )
    inspection.write_histograms(tokens, out_hist)
    inspection.write_inspection_html(tokens, metrics, out_html, n_samples=settings["samples"])
    log.info(
        "inspection: %d samples shown, %d score variants, %d percentiles swept",
        min(settings["samples"], len(tokens)),
        len(comparison.variants),
        len(percentiles),
    )


def counterfactuals(
    config: dict[str, Any],
    corpus_path: str | Path,
    tokens_path: str | Path,
    level: str,
    out_path: str | Path,
) -> None:
    from leafpipe.prune.counterfactuals import build_counterfactuals

    # Response spans carry `step_end` (where the next scored scope starts); the scoring
    # split is the fallback for detections written without it.
    rows = build_counterfactuals(
        read_jsonl(corpus_path),
        read_parquet(tokens_path),
        level,
        split=config["scoring"]["steps"],
        widen=_detection_rule(config["detection"], "widen_words"),
    )
    write_jsonl(rows, out_path, inputs=[corpus_path, tokens_path])
    n_cf = sum(r["kind"] == "counterfactual" for r in rows)
    log.info(
        "counterfactuals (%s): %d originals, %d counterfactuals", level, len(rows) - n_cf, n_cf
    )


def validate_counterfactuals(
    config: dict[str, Any],
    teacher_dir: str | Path,
    student_dir: str | Path,
    data_path: str | Path,
    out_path: str | Path,
    out_summary: str | Path,
    corpus_path: str | Path,
    tokens_path: str | Path,
    level: str,
    threads: int | None = None,
) -> None:
    """Keep the counterfactuals whose pruned span the teacher does not need (validity.margin).

    Every row is written with its loss rises (`teacher_rise`, `student_rise`; null for originals
    and when not measured); the summary counts what was kept and, on a corpus with planted
    labels, how many removed spans were planted. With validity.check off no model is loaded and
    every counterfactual is kept.
    """
    from leafpipe.models.loading import load_placed_model
    from leafpipe.prune.validity import (
        ValiditySpec,
        annotate,
        loss_rises,
        select,
        summarize,
    )

    _threads(threads)
    spec = _pick(ValiditySpec, config["validity"])
    rows = read_jsonl(data_path)
    rises: dict[str, dict[str, float]] = {}  # role -> counterfactual id -> rise
    # The models it loads: with validity.check off, none (nor does its rule track them).
    models = (
        {"teacher": teacher_dir, **({"student": student_dir} if spec.student else {})}
        if spec.check
        else {}
    )
    for role, model_dir in models.items():
        model, tok = load_placed_model(model_dir, **hub_options(config, role))
        rises[role] = loss_rises(model, tok, rows, spec.max_tokens)
        del model  # before the next model loads
    rows = annotate(rows, rises.get("teacher"), rises.get("student"))
    kept = select(rows, spec.margin, spec.student) if spec.check else [True] * len(rows)
    summary = summarize(rows, kept, spec, level, read_jsonl(corpus_path), read_parquet(tokens_path))
    inputs = [*models.values(), data_path, corpus_path, tokens_path]
    write_jsonl([r for r, k in zip(rows, kept) if k], out_path, inputs=inputs)
    write_json(summary, out_summary, inputs=inputs)
    log.info(
        "validity (%s): %d of %d counterfactuals kept (check %s, margin %g)",
        level,
        summary["kept"],
        summary["counterfactuals"],
        "on" if spec.check else "off",
        spec.margin,
    )
