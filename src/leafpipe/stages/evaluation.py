"""Evaluation: a benchmark's rows, generations per shard, and their grades."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leafpipe.config import benchmark_local_files
from leafpipe.evaluation.protocols import max_new_tokens, protocol_of, protocol_rows, stop_strings
from leafpipe.evaluation.sampling import SamplingSpec
from leafpipe.files.atomic import read_json, read_jsonl, write_json, write_jsonl
from leafpipe.models.hub_options import hub_options
from leafpipe.stages.common import _threads, log, shard_rows


def benchmark_data(
    config: dict[str, Any],
    benchmark: str,
    out_path: str | Path,
    info_path: str | Path,
    input_path: str | Path | None = None,
) -> None:
    """A benchmark's normalised rows (docs/benchmarks.md), asked as its protocol asks them (the
    rows hold the prompt's parts), and its info: source, licence, protocol, skipped rows.

    Absent data (no file, no data package, offline) is not an error: the rows are empty and the
    info says why, so the report shows the benchmark as skipped with that reason.
    """
    from leafpipe.evaluation.registry import benchmark_rows

    bench = config["evaluation"]["benchmarks"][benchmark]
    protocol = protocol_of(bench)
    rows, info = benchmark_rows(bench, str(input_path) if input_path else None)
    rows = protocol_rows(protocol, rows, benchmark, info["kind"])
    # The rule's inputs: the file or folder read, and the local files its rows come from.
    inputs = [*([input_path] if input_path else []), *benchmark_local_files(bench)]
    write_jsonl(rows, out_path, inputs=inputs)
    info = {"benchmark": benchmark, **info, "protocol": protocol.name}
    write_json(info, info_path, inputs=inputs)
    log.info(
        "benchmark %s: %d rows (%s), %d skipped",
        benchmark,
        len(rows),
        info.get("source") or info.get("reason"),
        len(info["skipped"]),
    )


def _sampling(bench: dict[str, Any], seed: int) -> SamplingSpec:
    return SamplingSpec(
        n=bench["n"],
        temperature=bench["temperature"],
        top_p=bench["top_p"],
        stop=stop_strings(bench),
        seed=seed,
    )


@dataclass(frozen=True)
class _Generation:
    """One generate job's prompts and settings, run by either backend; each returns the records
    and the info of what made them."""

    model_dir: str | Path
    rows: Sequence[dict[str, Any]]
    max_new_tokens: int
    sampling: SamplingSpec
    options: dict[str, Any]  # hub_options: trust_remote_code, revision

    def with_vllm(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        from leafpipe.evaluation.generation_vllm import generate_vllm, vllm_setup
        from leafpipe.text.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(self.model_dir, **self.options)
        setup = vllm_setup(self.model_dir, tokenizer, revision=self.options["revision"])
        log.info("generating with vLLM: %s", setup)
        out = generate_vllm(
            self.model_dir,
            tokenizer,
            self.rows,
            setup=setup,
            max_new_tokens=self.max_new_tokens,
            sampling=self.sampling,
            **self.options,
        )
        return out, setup.info(tokenizer, self.sampling.stop)

    def with_transformers(
        self, batch_size: int, partial: Path
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        from leafpipe.evaluation.generation import generate, transformers_info
        from leafpipe.models.loading import load_placed_model

        model, tokenizer = load_placed_model(self.model_dir, **self.options)
        out = generate(
            model,
            tokenizer,
            self.rows,
            max_new_tokens=self.max_new_tokens,
            batch_size=batch_size,
            sampling=self.sampling,
            partial_path=partial,
        )
        return out, transformers_info(model, tokenizer, self.sampling.stop)


def generate(
    config: dict[str, Any],
    model: str,
    benchmark: str,
    model_dir: str | Path,
    bench_path: str | Path,
    out_path: str | Path,
    info_path: str | Path,
    shard: int | str = 0,
    partial_path: str | Path | None = None,
    threads: int | None = None,
) -> None:
    """Complete shard `shard` of a benchmark's prompts (a contiguous slice; the number of shards
    is the entry's `shards` or evaluation.shards); a killed job resumes from `partial_path`.
    `info_path` records what the completions were made with (`generation.generation_info`; `{}`
    for a shard without rows, where nothing is generated)."""
    _threads(threads)
    evaluation = config["evaluation"]
    bench = evaluation["benchmarks"][benchmark]
    rows = shard_rows(read_jsonl(bench_path), int(shard), bench.get("shards", evaluation["shards"]))
    inputs = [model_dir, bench_path]  # a model given as a hub id is not recorded
    if not rows:  # a skipped benchmark (benchmark_data says why): nothing to load a model for
        write_json({}, info_path, inputs=inputs)
        write_jsonl([], out_path, inputs=inputs)
        return
    from leafpipe.evaluation.generation_vllm import vllm_usable

    backend = evaluation["backend"]
    if backend == "vllm" and not vllm_usable():
        raise RuntimeError(
            "evaluation.backend is vllm, but vLLM is not installed or no GPU is visible"
        )
    task = _Generation(
        model_dir,
        rows,
        max_new_tokens(evaluation, bench),
        _sampling(bench, config["seed"]),
        hub_options(config, model),
    )
    partial = Path(partial_path) if partial_path else Path(f"{out_path}.partial")
    if backend == "vllm" or (backend == "auto" and vllm_usable()):
        out, info = task.with_vllm()
    else:
        out, info = task.with_transformers(evaluation["batch_size"], partial)
    # The info first: a job killed between the two leaves no generations, so it is rerun.
    write_json(info, info_path, inputs=inputs)
    write_jsonl(out, out_path, inputs=inputs)
    partial.unlink(missing_ok=True)


def grade(
    config: dict[str, Any],
    model: str,
    benchmark: str,
    generations: Sequence[str | Path],
    bench_path: str | Path,
    info_path: str | Path,
    out_path: str | Path,
    graded_path: str | Path,
    generation_infos: Sequence[str | Path] = (),
    threads: int | None = None,
) -> None:
    """Grade the generation shards (in order) by the benchmark's task; a skipped benchmark gets a
    score file that says so. The scores name what generated them (`generation`: the distinct
    infos of the shards in `generation_infos`, one unless shards ran on machines that chose
    differently)."""
    from leafpipe.evaluation.registry import grade_generations

    evaluation = config["evaluation"]
    # An entry's own `code_tests` overrides the run's: the graders read it from the entry.
    bench = {"code_tests": evaluation["code_tests"], **evaluation["benchmarks"][benchmark]}
    info = read_json(info_path)
    inputs = [*generations, *generation_infos, bench_path, info_path]
    settings = dict(
        model=model,
        benchmark=benchmark,
        batch_size=evaluation["batch_size"],
        max_new_tokens=max_new_tokens(evaluation, bench),
        protocol=protocol_of(bench).name,
        decoding="greedy"
        if bench["temperature"] == 0
        else f"sampled: n={bench['n']}, temperature={bench['temperature']}, top_p={bench['top_p']}",
        seed=config["seed"],
        source=info.get("source"),
        generation=_distinct_settings(generation_infos),
    )
    if not info["available"]:
        write_jsonl([], graded_path, inputs=inputs)
        skipped = {**settings, "available": False, "reason": info["reason"]}
        write_json(skipped, out_path, inputs=inputs)
        log.info("%s on %s: skipped (%s)", model, benchmark, info["reason"])
        return
    completions = [g for path in generations for g in read_jsonl(path)]
    graded, summary = grade_generations(
        read_jsonl(bench_path), completions, bench, workers=threads or 2
    )
    write_jsonl(graded, graded_path, inputs=inputs)
    write_json({**settings, "available": True, **summary}, out_path, inputs=inputs)
    log.info(
        "%s on %s: pass@1 %.3f over %d problems",
        model,
        benchmark,
        summary["accuracy"],
        summary["n"],
    )


def _distinct_settings(info_paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The distinct generation infos, in shard order; a shard without rows made none."""
    infos = [read_json(p) for p in info_paths]
    return list({json.dumps(i, sort_keys=True): i for i in infos if i}.values())
