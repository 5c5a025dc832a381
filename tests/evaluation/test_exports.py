"""Exports to the official scorers, checked against the formats their tools document:

- evalplus, commit 26d6d00: README "Expected Schema of samples.jsonl" (`task_id`, and
  `solution`, a self-contained program, or `completion`; one line per sample, the task id
  repeated) and `evalplus/data/utils.py: load_solutions` (asserts `solution` is a string);
  `evalplus/evaluate.py` runs `solution` as it is when present.
- LiveCodeBench, commit 28fef95: README "Custom Evaluation" (a JSON list of
  `{"question_id": ..., "code_list": [...]}`) and `lcb_runner/runner/custom_evaluator.py`
  (sorts the entries by `str(question_id)`, takes each `code_list` as the extracted code).
"""

import json
import subprocess
import sys

import pytest

from leafpipe.evaluation.exports import (
    EXPORT_FORMATS,
    ExportInputError,
    collect_samples,
    evalplus_samples,
    export_files,
    export_format,
    livecodebench_outputs,
)

PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
HUMANEVAL = {
    "id": "HumanEval/0",
    "task": "code",
    "code": {"kind": "humaneval", "prompt": PROMPT, "entry_point": "add", "test": TEST},
}
FENCED = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
BODY = "    return a + b\n"


def _run_tests(solution: str) -> None:
    """Run a sample as evalplus does (the solution as it is, then the tests); raises if wrong."""
    exec(solution + "\n" + TEST + "\ncheck(add)\n", {})  # noqa: S102 (test-owned code)


@pytest.mark.parametrize("completion", [FENCED, BODY], ids=["fenced function", "body"])
def test_an_evalplus_solution_is_a_whole_program_that_runs(completion):
    (line,) = evalplus_samples([HUMANEVAL], {"HumanEval/0": [completion]})
    solution = line["solution"]
    assert solution.startswith(PROMPT)
    assert "```" not in solution and "Here it is" not in solution
    _run_tests(solution)


def test_evalplus_samples_have_the_documented_fields_one_line_per_sample():
    other = {**HUMANEVAL, "id": "HumanEval/1"}
    lines = evalplus_samples(
        [HUMANEVAL, other], {"HumanEval/0": [FENCED, BODY], "HumanEval/1": [BODY]}
    )
    assert [line["task_id"] for line in lines] == ["HumanEval/0", "HumanEval/0", "HumanEval/1"]
    for line in lines:
        assert set(line) == {"task_id", "solution"}
        assert isinstance(line["solution"], str)
        json.dumps(line)  # one JSON object per line


def test_livecodebench_outputs_hold_each_problems_code_as_lcb_runner_extracts_it():
    rows = [{"id": "abc301_a", "code": {"kind": "stdio"}}, {"id": "1873_A", "code": None}]
    samples = {
        "abc301_a": ["```python\nprint(1)\n```", "Try:\n```\nprint(2)\n```\n"],
        "1873_A": ["x = 1"],  # no fences: lcb_runner reads no code ("")
    }
    outputs = livecodebench_outputs(rows, samples)
    assert outputs == [
        {"question_id": "abc301_a", "code_list": ["print(1)", "print(2)"]},
        {"question_id": "1873_A", "code_list": [""]},
    ]
    # what custom_evaluator.py does with it: a list of code lists in question_id order
    ordered = [o["code_list"] for o in sorted(outputs, key=lambda o: str(o["question_id"]))]
    assert ordered == [[""], ["print(1)", "print(2)"]]


def test_the_module_the_workflow_imports_to_plan_exports_loads_no_torch():
    code = "import sys, leafpipe.evaluation.exports; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_kinds_pick_their_scorers_and_a_file_suffix_the_tools_accept():
    assert {k: f.name for k, f in EXPORT_FORMATS.items()} == {
        "humaneval": "evalplus",
        "humaneval_plus": "evalplus",
        "livecodebench": "livecodebench",
    }
    # evalplus asserts samples.endswith(".jsonl"); LiveCodeBench json.loads the file and cuts
    # ".json" off to name its results
    assert EXPORT_FORMATS["humaneval"].suffix.endswith(".jsonl")
    assert EXPORT_FORMATS["livecodebench"].suffix.endswith(".json")


def test_the_workflow_exports_the_kinds_with_a_scorer_unless_exports_are_off():
    benchmarks = {
        "he": {"kind": "humaneval"},
        "lcb": {"kind": "livecodebench", "path": "x.jsonl"},
        "gsm8k": {"kind": "gsm8k"},
        "world_test": {"split": "test"},
    }
    assert export_files({"exports": True, "benchmarks": benchmarks}) == {
        "he": "evalplus.jsonl",
        "lcb": "livecodebench.json",
    }
    assert export_files({"exports": False, "benchmarks": benchmarks}) == {}


def test_a_kind_without_a_scorer_or_a_wrong_suffix_is_refused():
    with pytest.raises(ValueError, match="gsm8k"):
        export_format("gsm8k", "x.evalplus.jsonl")
    with pytest.raises(ValueError, match=r"\.livecodebench\.json"):
        export_format("livecodebench", "x.evalplus.jsonl")
    assert export_format("humaneval_plus", "m/he.evalplus.jsonl").name == "evalplus"


def _gen(problem, sample, completion="pass"):
    return {"id": problem, "sample": sample, "completion": completion}


def test_samples_are_gathered_across_shards_in_sample_order():
    rows = [{"id": "a"}, {"id": "b"}]
    shards = [
        ("g-0.jsonl", [_gen("a", 1, "a1"), _gen("a", 0, "a0")]),
        ("g-1.jsonl", [_gen("b", 0, "b0"), _gen("b", 1, "b1")]),
    ]
    assert collect_samples(rows, shards) == {"a": ["a0", "a1"], "b": ["b0", "b1"]}


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([_gen("zzz", 0)], r'g\.jsonl: row 1: field "id" .zzz. is no benchmark row'),
        ([_gen("a", 0), {"id": "a", "sample": 1}], r'g\.jsonl: row 2: field "completion"'),
        ([_gen("a", 0), _gen("a", 0)], r'g\.jsonl: row 2: field "sample" 0 repeats'),
        ([{"id": "a", "sample": True, "completion": ""}], r'row 1: field "sample"'),
    ],
)
def test_a_bad_generation_record_names_file_row_and_field(records, message):
    with pytest.raises(ExportInputError, match=message):
        collect_samples([{"id": "a"}], [("g.jsonl", records)])


def test_a_problem_with_fewer_samples_than_the_others_is_an_error():
    rows = [{"id": "a"}, {"id": "b"}]
    with pytest.raises(ExportInputError, match=r"1 problems have fewer samples than 2 .*'b'"):
        collect_samples(rows, [("g.jsonl", [_gen("a", 0), _gen("a", 1), _gen("b", 0)])])
    with pytest.raises(ExportInputError, match="'b'"):
        collect_samples(rows, [("g.jsonl", [_gen("a", 0)])])
