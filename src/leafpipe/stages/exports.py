"""Results handed to outside tools: generations in the official scorers' formats, and
lm-evaluation-harness run on a model folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leafpipe.files.atomic import read_json, read_jsonl, write_json, write_jsonl
from leafpipe.stages.common import log


def export_samples(
    config: dict[str, Any],
    model: str,
    benchmark: str,
    generations: Sequence[str | Path],
    bench_path: str | Path,
    info_path: str | Path,
    out_path: str | Path,
) -> None:
    """Write a model's generations on a benchmark in its official scorer's format (evalplus
    samples.jsonl or LiveCodeBench custom outputs; docs/benchmarks.md#exports).

    `generations` are the benchmark's generation shards, in order. A benchmark without data
    exports an empty file; the log gives the command that scores the file, and warns when rows
    were left out before generation (the official scorers want every problem of their dataset).
    """
    from leafpipe.evaluation.exports import collect_samples, export_format
    from leafpipe.evaluation.registry import entry_kind

    bench = config["evaluation"]["benchmarks"][benchmark]
    fmt = export_format(entry_kind(bench), out_path)
    rows = read_jsonl(bench_path)
    samples = collect_samples(rows, [(str(p), read_jsonl(p)) for p in generations])
    content = fmt.build(rows, samples)
    inputs = [*generations, bench_path, info_path]
    if fmt.suffix.endswith(".jsonl"):
        write_jsonl(content, out_path, inputs=inputs)
    else:
        write_json(content, out_path, inputs=inputs)
    _warn_incomplete(benchmark, bench, read_json(info_path))
    log.info(
        "%s on %s: %d problems exported; score with: %s",
        model,
        benchmark,
        len(samples),
        fmt.command.format(path=out_path),
    )


def _warn_incomplete(benchmark: str, bench: dict[str, Any], info: dict[str, Any]) -> None:
    """The official scorers refuse an export that lacks some of their dataset's problems."""
    if not info["available"]:
        log.warning("%s: no data (%s): the export is empty", benchmark, info["reason"])
    elif info["skipped"] or bench.get("limit"):
        log.warning(
            "%s: rows left out before generation (%d skipped, limit %s): the official scorer "
            "will not score an export that lacks some of its problems",
            benchmark,
            len(info["skipped"]),
            bench.get("limit"),
        )


def lm_eval(
    config: dict[str, Any],
    model: str,
    model_dir: str | Path,
    out_path: str | Path,
) -> None:
    """Run lm-evaluation-harness (`evaluation.lm_eval`: its tasks and options) on a model folder
    or hub id (at the revision its role pins) with its HF backend; its results file is written
    to `out_path` as the harness wrote it."""
    from leafpipe.evaluation.harness import evaluate_folder
    from leafpipe.models.hub_options import pinned_revision, trusts_remote_code

    settings = config["evaluation"]["lm_eval"]
    results = evaluate_folder(
        model_dir,
        settings,
        trusts_remote_code(config, model),
        config["seed"],
        out_path,
        pinned_revision(config, model),
    )
    log.info("lm-eval on %s: tasks %s", model, sorted(results["results"]))
