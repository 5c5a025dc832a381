"""A model's generations in the input formats of the official scorers, so that a leafpipe score
can be checked against the tool its benchmark's authors publish.

Two formats, picked by the benchmark's kind (`EXPORT_FORMATS`):
- evalplus (`humaneval`, `humaneval_plus`): `samples.jsonl`, one line per sample,
  `{"task_id": ..., "solution": ...}` with the whole program, for
  `evalplus.evaluate --dataset humaneval --samples FILE` (evalplus README "Expected Schema of
  samples.jsonl" and `evalplus/data/utils.py: load_solutions`, commit 26d6d00).
- LiveCodeBench (`livecodebench`): a JSON list of `{"question_id": ..., "code_list": [...]}`, one
  entry per problem with the code of each sample, for
  `python -m lcb_runner.runner.custom_evaluator --custom_output_file FILE` (LiveCodeBench README
  "Custom Evaluation" and `lcb_runner/runner/custom_evaluator.py`, commit 28fef95).

The exported code is what leafpipe's grader runs (minus the tests and preludes), read out of
each answer by the same functions, so a difference between the two scores comes from the tests
or the sandbox, never from how code was read out of an answer. Torch-free: the workflow imports
`EXPORT_FORMATS` to plan the export jobs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Samples = dict[str, list[str]]  # problem id -> its completions, in sample order


class ExportInputError(ValueError):
    """A generations file or benchmark row the export cannot use: the message names the file,
    the row and the field."""


@dataclass(frozen=True)
class ExportFormat:
    """One official scorer's input: the file's `suffix` (the tools read the extension: evalplus
    wants `.jsonl`, LiveCodeBench `.json`), how to `build` its content from the benchmark rows and
    the samples, and the `command` that scores it (`{path}` stands for the file)."""

    name: str
    suffix: str
    build: Callable[[Sequence[Mapping[str, Any]], Samples], list[dict[str, Any]]]
    command: str


def evalplus_samples(rows: Sequence[Mapping[str, Any]], samples: Samples) -> list[dict[str, Any]]:
    """evalplus's samples.jsonl lines: one per sample, the task id repeated for each, the
    `solution` being the prompt completed as leafpipe's HumanEval check completes it
    (`programs.humaneval_solution`)."""
    from leafpipe.evaluation.grading.programs import humaneval_solution

    return [
        {
            "task_id": row["id"],
            "solution": humaneval_solution(
                row["code"]["prompt"], completion, row["code"]["entry_point"]
            ),
        }
        for row in rows
        for completion in samples[row["id"]]
    ]


def livecodebench_outputs(
    rows: Sequence[Mapping[str, Any]], samples: Samples
) -> list[dict[str, Any]]:
    """LiveCodeBench's custom outputs: per problem, the code of each sample as lcb_runner reads
    it out of an answer (`livecodebench_runner.extract_code`, which leafpipe's grader uses too);
    the evaluator takes `code_list` as already extracted (it passes it as output and as code)."""
    from leafpipe.evaluation.grading.livecodebench_runner import extract_code

    return [
        {"question_id": row["id"], "code_list": [extract_code(c) for c in samples[row["id"]]]}
        for row in rows
    ]


EVALPLUS = ExportFormat(
    "evalplus",
    "evalplus.jsonl",
    evalplus_samples,
    "evalplus.evaluate --dataset humaneval --samples {path}",
)
LIVECODEBENCH = ExportFormat(
    "livecodebench",
    "livecodebench.json",
    livecodebench_outputs,
    "python -m lcb_runner.runner.custom_evaluator --custom_output_file {path}",
)
# Benchmark kind -> the official scorer's format. HumanEval+ is scored by the same command: its
# extra tests are evalplus's own "Base + Extra" figure.
EXPORT_FORMATS: dict[str, ExportFormat] = {
    "humaneval": EVALPLUS,
    "humaneval_plus": EVALPLUS,
    "livecodebench": LIVECODEBENCH,
}


def export_files(evaluation: Mapping[str, Any]) -> dict[str, str]:
    """The config's `evaluation` section's exported benchmarks, each with its file's suffix
    (what the workflow plans a job for): those whose kind has a format, with exports on."""
    from leafpipe.evaluation.registry import entry_kind

    if not evaluation["exports"]:
        return {}
    kinds = {name: entry_kind(bench) for name, bench in evaluation["benchmarks"].items()}
    return {name: EXPORT_FORMATS[k].suffix for name, k in kinds.items() if k in EXPORT_FORMATS}


def export_format(kind: str, out_path: str | os.PathLike[str]) -> ExportFormat:
    """The format a benchmark kind exports to; `out_path` must carry its suffix, which the
    workflow derives from the same record."""
    fmt = EXPORT_FORMATS.get(kind)
    if fmt is None:
        raise ValueError(
            f"{out_path}: benchmark kind {kind!r} has no export format "
            f"(kinds that have one: {sorted(EXPORT_FORMATS)})"
        )
    if not str(out_path).endswith(f".{fmt.suffix}"):
        raise ValueError(f"{out_path}: a {kind} benchmark exports to a .{fmt.suffix} file")
    return fmt


def _checked(record: Any, where: str) -> tuple[str, int, str]:
    """A generations record's (id, sample, completion), or an error naming the bad field."""
    if not isinstance(record, Mapping):
        raise ExportInputError(f"{where}: is not a JSON object")
    for field, kind in (("id", str), ("sample", int), ("completion", str)):
        if not isinstance(record.get(field), kind) or isinstance(record.get(field), bool):
            raise ExportInputError(f'{where}: field "{field}" is missing or not a {kind.__name__}')
    return record["id"], record["sample"], record["completion"]


def collect_samples(
    rows: Sequence[Mapping[str, Any]], generations: Sequence[tuple[str, Sequence[Any]]]
) -> Samples:
    """Each row's completions in sample order, from generation shards given as (file, records).

    Every row must have the same number of samples (the scorers estimate pass@k per problem from
    n samples each), every record must belong to a row, and no (id, sample) may repeat.
    """
    found: dict[str, dict[int, str]] = {str(row["id"]): {} for row in rows}
    for path, records in generations:
        for line, record in enumerate(records, start=1):
            where = f"{path}: row {line}"
            problem, sample, completion = _checked(record, where)
            if problem not in found:
                raise ExportInputError(f'{where}: field "id" {problem!r} is no benchmark row')
            if sample in found[problem]:
                raise ExportInputError(f'{where}: field "sample" {sample} repeats for {problem!r}')
            found[problem][sample] = completion
    most = max((len(by_sample) for by_sample in found.values()), default=0)
    short = [p for p, by_sample in found.items() if not by_sample or len(by_sample) < most]
    if short:
        raise ExportInputError(
            f"{len(short)} problems have fewer samples than {max(most, 1)} (e.g. {short[:3]}): "
            "export every generation shard together"
        )
    return {p: [by_sample[k] for k in sorted(by_sample)] for p, by_sample in found.items()}
