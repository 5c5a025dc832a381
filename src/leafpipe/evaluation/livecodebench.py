"""Conversion of LiveCodeBench problems into code rows checked by their own test cases, and the
files and dates that make up its releases.

LiveCodeBench stores its private tests compressed and pickled, and has two kinds of test: stdin
programs and calls of a `Solution` method. Decoding them safely and turning functional tests into a
self-contained script is enough code to keep apart from the loaders in `sources`.

Its hub dataset (livecodebench/code_generation_lite) grows by one file per release: release_vN is
test.jsonl, test2.jsonl, ..., testN.jsonl together, as the dataset's loading script lists them
(400, 511, 612, 713, 880 and 1055 problems for release_v1..v6). lcb_runner then keeps the problems
whose `contest_date` lies in a `start_date`/`end_date` window; `release_files` and `contest_date`
give `sources` and `benchmarks` what they need to do the same.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import re
import zlib
from datetime import datetime
from typing import Any

from leafpipe.evaluation.grading.livecodebench_calls import calls_test
from leafpipe.evaluation.rows import (
    CODE_FORMAT,
    JUDGE_PRELUDE,
    BenchmarkRow,
    CodeSpec,
    InputRow,
    UnusableRow,
    code_row,
)

LCB_HUB = "livecodebench/code_generation_lite"
# The newest release whose files we know; "release_latest" is refused: it moves with the dataset.
_LAST_RELEASE = 6
_RELEASE_TAG = re.compile(r"release_v(\d+)|v(\d+)(?:_v(\d+))?")


# Problems per file: the differences of the release sizes LiveCodeBench's README publishes
# (release_v1..v6: 400, 511, 612, 713, 880, 1055).
_FILE_SIZES = (400, 111, 101, 101, 167, 175)


def _release_file(number: int) -> str:
    return "test.jsonl" if number == 1 else f"test{number}.jsonl"


def published_size(files: tuple[str, ...]) -> int:
    """How many problems LiveCodeBench publishes for these files of its dataset."""
    sizes = {_release_file(number): size for number, size in enumerate(_FILE_SIZES, 1)}
    return sum(sizes[name] for name in files)


def release_files(tag: str) -> tuple[str, ...]:
    """The dataset files of a release tag, in order: `release_vN` is files 1..N (the cumulative
    release), `vN` file N alone and `vA_vB` files A..B (lcb_runner's finer tags)."""
    found = _RELEASE_TAG.fullmatch(tag)
    if found is None:
        raise ValueError(
            f"unknown LiveCodeBench release {tag!r}: use release_v1..release_v{_LAST_RELEASE}, "
            f"v1..v{_LAST_RELEASE} or vA_vB (release_latest changes as the dataset grows: pin one)"
        )
    cumulative, first, last = found.groups()
    start, end = (1, int(cumulative)) if cumulative else (int(first), int(last or first))
    if not 1 <= start <= end <= _LAST_RELEASE:
        raise ValueError(
            f"unknown LiveCodeBench release {tag!r}: releases run from 1 to {_LAST_RELEASE}, "
            "the first not after the last"
        )
    return tuple(_release_file(number) for number in range(start, end + 1))


def contest_date(row: InputRow) -> datetime:
    """The problem's `contest_date` (ISO 8601, no time zone, as the dataset writes it)."""
    text = row.text("contest_date")
    try:
        when = datetime.fromisoformat(text)
    except ValueError as err:
        raise row.error("contest_date", f"is not an ISO 8601 date: {text!r}") from err
    if when.tzinfo is not None:
        raise row.error("contest_date", f"has a time zone ({text!r}); the dataset's have none")
    return when


class _NoGlobalsUnpickler(pickle.Unpickler):
    """LiveCodeBench pickles plain JSON strings; refusing every global means loading runs no
    code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _lcb_cases(row: InputRow, field: str) -> list[dict[str, Any]]:
    """LiveCodeBench test cases: a JSON list, or (private tests) base64 of zlib of a pickled JSON
    string; each case needs input and output (testtype defaults to stdin)."""
    value = row.get(field, (str, list), required=field != "private_test_cases")
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                raw = zlib.decompress(base64.b64decode(value.encode()))
                value = json.loads(_NoGlobalsUnpickler(io.BytesIO(raw)).load())
            except (
                Exception
            ) as err:  # undecodable bytes fail in many ways: all mean "not this form"
                raise row.error(
                    field, f"is neither JSON nor LiveCodeBench's compressed form: {err}"
                ) from err
    if not value:
        return []
    if not isinstance(value, list):
        raise row.error(field, f"should be a list of test cases, not {type(value).__name__}")
    for number, case in enumerate(value, 1):
        if not isinstance(case, dict) or not {"input", "output"} <= case.keys():
            raise row.error(field, f"case {number} should be an object with input and output")
    return value


def livecodebench_row(row: InputRow) -> BenchmarkRow:
    content = row.text("question_content")
    if not content:
        raise UnusableRow('no problem statement (field "question_content" is empty)')
    cases = _lcb_cases(row, "public_test_cases") + _lcb_cases(row, "private_test_cases")
    if not cases:
        raise UnusableRow("no test cases (public_test_cases and private_test_cases are empty)")
    types = {str(case.get("testtype", "stdin")) for case in cases}
    if len(types) > 1:
        raise UnusableRow(f"mixes test types {sorted(types)}")
    pairs = [[str(case["input"]), str(case["output"])] for case in cases]
    starter = row.text("starter_code", required=False)
    row_id = row.row_id(["question_id", "id"], "livecodebench")
    title = row.text("question_title", required=False)
    heading = f"# {title}\n\n" if title else ""
    if types == {"stdin"}:
        instruction = (
            f"{heading}{content}\n\nWrite a Python 3 program that reads the input from standard "
            f"input and writes the answer to standard output. {CODE_FORMAT}"
        )
        stdio: CodeSpec = {
            "kind": "stdio",
            "prompt": "",
            "entry_point": "",
            "test": "",
            "cases": pairs,
        }
        return code_row(row_id, instruction, stdio)
    if types != {"functional"}:
        raise UnusableRow(f"unknown test type {types.pop()!r} (expected stdin or functional)")
    metadata = row.get("metadata", (str, dict), required=False) or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata.strip() else {}
        except json.JSONDecodeError as err:
            raise row.error("metadata", f"is not JSON: {err.msg}") from err
    method = metadata.get("func_name") if isinstance(metadata, dict) else None
    found = re.search(r"def (\w+)\(\s*self", starter)
    method = method or (found.group(1) if found else None)
    if not method:
        raise UnusableRow(
            "functional tests but no function name (metadata.func_name or starter code)"
        )
    # lcb_runner's rules (one limit per call, a tuple result taken as a list, then ==), with its
    # default 6 s per call; a livecodebench entry's grading applies its own `timeout_s`.
    test = calls_test(pairs, method)
    instruction = (
        f"{heading}{content}\n\nComplete the following Python code, keeping its class and method "
        f"names. {CODE_FORMAT}\n\n```python\n{starter}\n```"
    )
    spec: CodeSpec = {
        "kind": "script",
        "prompt": JUDGE_PRELUDE,
        "entry_point": method,
        "test": test,
        "cases": pairs,
    }
    return code_row(row_id, instruction, spec)
