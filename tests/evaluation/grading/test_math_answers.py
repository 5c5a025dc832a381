"""Math answer grading: extraction, math-verify equivalences and near-misses, the string fallback,
agreement with the world's numeric grader, and the per-pair timeout that kills a hung worker.

The graded cases run in one `grade_math` call (module fixture), since each call starts its worker
processes afresh.
"""

from __future__ import annotations

import time

import pytest

from leafpipe.evaluation.grading import math_answers
from leafpipe.evaluation.grading.math_answers import (
    Extracted,
    extract_final_answer,
    grade_math,
    normalize_answer,
)
from leafpipe.evaluation.grading.numeric_answers import grade_numeric_answers

PMATRIX = r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{\frac{\sqrt{3}}{2}}$.", Extracted(r"\frac{\sqrt{3}}{2}", "boxed")),
        (r"\fbox{12}", Extracted("12", "boxed")),
        (r"hence \boxed 5.", Extracted("5", "boxed")),
        (r"\boxed {7}", Extracted("7", "boxed")),
        (r"\boxed{\{1, 2\}}", Extracted(r"\{1, 2\}", "boxed")),
        (r"\boxed{$12$}", Extracted("12", "boxed")),
        (r"\boxed{4} hmm, no: \boxed{6}", Extracted("6", "boxed")),
        (r"\boxed{\boxed{3}}", Extracted("3", "boxed")),
        (r"\boxed{5}. Wait, the answer is 6.", Extracted("6", "answer_is")),
        (r"The answer is 6. Checking: \boxed{5}", Extracted("5", "boxed")),
        (r"\boxed{3}. The answer is 4. No: \boxed{5}", Extracted("5", "boxed")),  # the last box
        (r"The final answer is $\boxed{5}$. I hope it is correct.", Extracted("5", "boxed")),
        (
            r"The final answer is $\frac{1}{2}$. I hope it is correct.",
            Extracted(r"\frac{1}{2}", "answer_is"),
        ),
        ("Step 1: 3 + 4 = 7.\nThe answer is 7.", Extracted("7", "answer_is")),
        ("The answer is 3.5. Next we check.", Extracted("3.5", "answer_is")),
        ("The answer is: **42**.", Extracted("42", "answer_is")),
        (r"the answer is \(x = 3\)", Extracted("x = 3", "answer_is")),
        ("Natalia sold clips.\n#### 1,234", Extracted("1,234", "hashes")),
        ("#### $1,234", Extracted("1,234", "hashes")),
        ("I think it is 7.", Extracted(None, None)),
        ("", Extracted(None, None)),
        (r"\boxed{}", Extracted(None, "boxed")),
        (r"\boxed{\frac{1}{2", Extracted(None, "boxed")),  # cut off mid-box
        ("The answer is 5. Hmm, the answer is", Extracted(None, "answer_is")),
        # Answer lines, reasons after the answer, boxes listed side by side (docs/grading.md).
        ("Adding up gives 18.\n**Answer: 18**", Extracted("18", "answer_line")),
        ("## Final Answer: $\\frac{7}{2}$", Extracted("\\frac{7}{2}", "answer_line")),
        ("**Answer:** $\\$2,400$", Extracted("\\$2,400", "answer_line")),
        ("The answer is 18 because 9 \\times 2 = 18.", Extracted("18", "answer_is")),
        ("Let me check the answer: \\boxed{5}", Extracted("5", "boxed")),  # not at a line start
        (r"x = \boxed{3} or x = \boxed{5}", Extracted("3, 5", "boxed")),
        (r"\boxed{3} or \boxed{\frac{1}{2", Extracted(None, "boxed")),  # the last box cut off
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\left( 3, \dfrac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
        (r"\text{(C)}", "(C)"),
        (r"\textbf{\text{Monday}}", "Monday"),
        (r"$90^\circ$.", "90"),
        (r"90^{\circ}", "90"),
        (r"50\%", "50"),
        (r"1\,000\!", "1000"),
        (r"5 \text{ cm}", "5cm"),  # unit words are kept: "5cm" is not "5"
        (r"x \rightarrow y", r"x\rightarrowy"),  # \right is dropped only as a command of its own
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


# (completion, gold, correct, decided_by): equivalents that exact match misses, and near-misses.
CASES = [
    (r"\boxed{0.5}", r"\frac{1}{2}", True, "math_verify"),
    (r"\boxed{0.49}", r"\frac{1}{2}", False, "math_verify"),
    (r"\boxed{0.333333}", r"\frac{1}{3}", True, "math_verify"),  # floats are rounded to 6 places
    (r"\boxed{0.33}", r"\frac{1}{3}", False, "math_verify"),
    (r"\boxed{\dfrac{14}{3}}", r"\frac{14}{3}", True, "math_verify"),
    (r"\boxed{\frac{14}{5}}", r"\frac{14}{3}", False, "math_verify"),
    # Units: MATH golds leave them out, so a unit after the number is ignored (math-verify's rule).
    (r"\boxed{5 \text{ cm}}", "5", True, "math_verify"),
    (r"\boxed{3 \text{ m}^2}", "3", True, "math_verify"),
    (r"\boxed{42 \text{ cm}, 43 \text{ cm}}", "42", False, "math_verify"),  # math-verify alone: 42
    (
        r"\boxed{2 \text{ hours } 30 \text{ minutes}}",
        "2",
        False,
        "math_verify",
    ),  # math-verify alone: 2
    (r"\boxed{[-2,7]}", "[-2, 7]", True, "math_verify"),
    (r"\boxed{(-2, 7]}", "[-2, 7]", False, "math_verify"),
    (r"\boxed{\begin{pmatrix}1&2\\3&4\end{pmatrix}}", PMATRIX, True, "math_verify"),
    (r"\boxed{\begin{pmatrix}1&2\\3&5\end{pmatrix}}", PMATRIX, False, "math_verify"),
    (r"\boxed{x = 3}", "3", True, "math_verify"),
    (r"\boxed{x = 4}", "3", False, "math_verify"),
    (r"\boxed{1,000}", "1000", True, "math_verify"),
    (r"\boxed{1\,000}", "1000", True, "math_verify"),
    (r"\boxed{1\,000}", "0", False, "math_verify"),  # math-verify alone reads 1\,000 as 1·000
    (r"\boxed{1000}", "100", False, "math_verify"),
    (r"\boxed{1 234}", "1234", True, "math_verify"),
    (r"\boxed{1 234}", "235", False, "math_verify"),  # math-verify alone reads 1 234 as 235
    # Percentages: "50\%" is accepted for a gold of 50, the number a "what percent" gold gives.
    (r"\boxed{50\%}", "50", True, "math_verify"),
    (r"\boxed{0.5}", "50", False, "math_verify"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}", True, "math_verify"),
    (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{\sqrt{3}}{2}", False, "math_verify"),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"(3, \frac{\pi}{2})", True, "math_verify"),
    (r"\boxed{(\frac{\pi}{2}, 3)}", r"(3, \frac{\pi}{2})", False, "math_verify"),
    # The sides' order (docs/grading.md, Comparison: verify(gold, predicted)): math-verify reads
    # a relation gold as its set against a set answer and a set gold as unordered, never the
    # other way round, so each of these grades the other way when the sides are swapped.
    (r"\boxed{(-2, 2)}", "|x| < 2", True, "math_verify"),
    (r"\boxed{(2, 1)}", r"\{1, 2\}", True, "math_verify"),  # a set gold: any order
    (r"\boxed{\{1, 2\}}", "(2, 1)", False, "math_verify"),  # a point gold: its order counts
    (r"\boxed{-5}", "-5", True, "math_verify"),
    (r"\boxed{5}", "-5", False, "math_verify"),
    (r"\boxed{\pi \cdot 2}", r"2\pi", True, "math_verify"),
    (r"\boxed{\frac{\pi}{2}}", r"2\pi", False, "math_verify"),
    (r"\boxed{90^\circ}", "90", True, "math_verify"),
    (r"\boxed{C}", r"\text{(C)}", True, "math_verify"),
    (r"\boxed{D}", r"\text{(C)}", False, "math_verify"),
    (r"\boxed{4} Wait, that is wrong: \boxed{6}", "6", True, "math_verify"),
    (r"\boxed{6} Wait, that is wrong: \boxed{4}", "6", False, "math_verify"),
    ("I am fairly sure it is 7.", "7", False, "no_answer"),
    ("Step 1: 3 + 4 = 7.\nThe answer is 7.", "7", True, "math_verify"),
    ("Step 1: 3 + 4 = 7.\nThe answer is 7.", "The answer is 7.", True, "math_verify"),
    ("Step 1: 3 + 5 = 8.\nThe answer is 8.", "7", False, "math_verify"),
    ("Natalia sold clips.\n#### 1,234", "1234", True, "math_verify"),
    ("Natalia sold clips.\n#### 1,243", "1234", False, "math_verify"),
    # math-verify cannot parse a repeating decimal: the normalised strings decide.
    (r"\boxed{0.\overline{3}}", r"0.\overline{3}", True, "string"),
    (r"\boxed{0.\overline{6}}", r"0.\overline{3}", False, "string"),
]


@pytest.fixture(scope="module")
def verdicts():
    return grade_math([(completion, gold) for completion, gold, _, _ in CASES], workers=2)


@pytest.mark.parametrize(
    ("index", "case"), list(enumerate(CASES)), ids=[f"{c[0]} | {c[1]}" for c in CASES]
)
def test_hard_cases(verdicts, index, case):
    _, _, correct, decided_by = case
    verdict = verdicts[index]
    assert (verdict.correct, verdict.decided_by) == (correct, decided_by), verdict.detail


def test_verdicts_carry_the_graded_answer_and_marker(verdicts):
    assert len(verdicts) == len(CASES)
    assert (verdicts[0].predicted, verdicts[0].marker) == ("0.5", "boxed")
    no_answer = next(v for v, case in zip(verdicts, CASES) if case[3] == "no_answer")
    assert (no_answer.predicted, no_answer.marker, no_answer.detail) == (
        None,
        None,
        "no answer marker",
    )


def test_agrees_with_the_world_grader_on_world_style_answers():
    completions = [
        "Step 1: 3 + 4 = 7.\nThe answer is 7.",
        "The answer is 7.0",
        "The answer is -12.",
        "the answer is: $-0.50",
        "The answer is **42**",
        "The answer is 3/4",
        "The answer is 5. Wait, no. The answer is 6.",
        "so we get \\boxed{1,234}",
        "Natalia sold 72 clips.\n#### 72",
        "The answer is 4. Checking: \\boxed{5}",
        "I think it is 7.",
        "The answer is 5. Hmm, the answer is",
        "The answer is 8.",
    ]
    references = [
        "7",
        "7",
        "-12",
        "-0.5",
        "42",
        "0.75",
        "6",
        "1234",
        "72",
        "5",
        "7",
        "5",
        "The answer is 7.",
    ]
    rows = [
        {"id": str(i), "completion": c, "reference": r}
        for i, (c, r) in enumerate(zip(completions, references))
    ]
    expected = [row["correct"] for row in grade_numeric_answers(rows)[0]]
    assert expected == [True] * 10 + [False] * 3  # the comparison below is not vacuous
    ours = grade_math(list(zip(completions, references)))  # default workers: one per usable CPU
    assert [v.correct for v in ours] == expected, [v.detail for v in ours]


def test_a_hanging_comparison_times_out_and_the_other_pairs_keep_their_verdicts():
    # sympy evaluates 10^(10^8) exactly to compare it with 5: minutes of big-integer arithmetic.
    pairs = [
        (r"\boxed{2}", "2"),
        (r"\boxed{10^{10^{8}}}", "5"),
        (r"\boxed{3}", "3"),
        (r"\boxed{5}", "4"),
    ]
    start = time.monotonic()
    # One worker: the pairs after the hang are only graded if the killed worker is replaced.
    verdicts = grade_math(pairs, timeout_s=1.0, workers=1)
    elapsed = time.monotonic() - start
    assert [(v.correct, v.decided_by) for v in verdicts] == [
        (True, "math_verify"),
        (False, "timeout"),
        (True, "math_verify"),
        (False, "math_verify"),
    ]
    assert "worker killed" in verdicts[1].detail
    assert elapsed < 30  # the hang was cut short (two worker start-ups and a 1 s timeout)


@pytest.mark.parametrize("kill_first", [False, True], ids=["dies-mid-pair", "died-while-idle"])
def test_a_worker_that_dies_is_a_timeout_and_is_replaced(monkeypatch, kill_first):
    assign = math_answers._Worker.assign

    def assign_and_kill_on_the_big_power(worker, job, timeout_s):
        big = "10^" in job[1]
        if big and kill_first:  # the send then meets a closed pipe
            worker.process.kill()
            worker.process.join()
        assign(worker, job, timeout_s)
        if big and not kill_first:
            worker.process.kill()  # as if sympy had crashed the interpreter

    monkeypatch.setattr(math_answers._Worker, "assign", assign_and_kill_on_the_big_power)
    pairs = [(r"\boxed{10^{10^{8}}}", "5"), (r"\boxed{3}", "3")]
    verdicts = grade_math(pairs, timeout_s=60.0, workers=1)
    assert [(v.correct, v.decided_by) for v in verdicts] == [
        (False, "timeout"),
        (True, "math_verify"),
    ]
    assert verdicts[0].detail == "worker died (exit code -9)"


def test_no_pairs_start_no_workers(monkeypatch):
    def no_worker(*args):
        raise AssertionError("a worker was started")

    monkeypatch.setattr(math_answers, "_Worker", no_worker)
    assert grade_math([]) == []


@pytest.mark.parametrize("kwargs", [{"timeout_s": 0}, {"workers": 0}])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        grade_math([(r"\boxed{1}", "1")], **kwargs)


def test_workers_start_under_a_main_script_that_cannot_run_twice(tmp_path):
    """Snakemake runs a stage as a `__main__` script; spawned workers must not re-run it."""
    import subprocess
    import sys

    script = tmp_path / "rule_script.py"
    script.write_text(
        "if __name__ != '__main__':\n"
        "    raise SystemExit('the script was run again by a worker')\n"
        "from leafpipe.evaluation.grading.math_answers import grade_math\n"
        "print(grade_math([('The answer is 7.', '7')], workers=1)[0].correct)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"


# `_compare` and `_judge` run in this process here (the workers of `grade_math` import the
# module afresh): the detail of each path, and which side is the gold.
@pytest.mark.parametrize(
    ("predicted", "gold", "correct", "read_as"),
    [
        ("18", "18", True, ""),
        ("(C) 18", "C", True, " (read as 'C')"),
        ("18 dollars", "180", False, " (read as '18')"),
        (r"12.5\%", "12.5", True, ""),  # also tried as the number 12.5
        # One expression, the box read first: math-verify's own "final answer is ... I hope"
        # inside it is text, dropped from the first `\text{` on; 3 is not the answer.
        (r"\frac{1}{2} \text{ final answer is \(3\) I hope}", r"\frac{1}{2}", True, ""),
    ],
)
def test_compare_says_when_it_read_the_answer_in_another_form(predicted, gold, correct, read_as):
    verdict, decided_by, detail = math_answers._compare(predicted, gold)
    assert (verdict, decided_by) == (correct, "math_verify")
    assert detail.endswith(read_as)
    assert ("read as" in detail) == bool(read_as)


@pytest.mark.parametrize(
    ("predicted", "gold", "detail"),
    [
        (
            r"0.\overline{3}",
            "1",
            r"math-verify could not parse predicted: '1' vs '0.\\overline{3}'",
        ),
        # Not one expression: no number is picked out of it (math-verify's default readings
        # would take the 4).
        ("3 & 4", "4", "math-verify could not parse predicted: '4' vs '3&4'"),
    ],
)
def test_compare_falls_back_to_strings_naming_the_side_that_did_not_parse(predicted, gold, detail):
    assert math_answers._compare(predicted, gold) == (False, "string", detail)


def test_a_comparison_that_raises_is_wrong_and_says_why(monkeypatch):
    def failing_verify(gold, predicted, *, timeout_seconds, raise_on_error):
        # math-verify's own timeout is off (the worker is killed instead), and with
        # raise_on_error=False it would report the error as a plain "not equal".
        assert timeout_seconds is None
        if raise_on_error:
            raise ZeroDivisionError
        return False

    monkeypatch.setattr(math_answers, "verify", failing_verify)
    assert math_answers._compare("1", "1") == (
        False,
        "math_verify",
        "gold 1 vs predicted 1: comparison failed (ZeroDivisionError)",
    )


def test_judge_compares_the_answer_against_the_gold_not_the_other_way():
    # verify(gold, predicted) reads a set gold as unordered, a point gold as ordered.
    assert math_answers._judge(Extracted("(2, 1)", "boxed"), r"\{1, 2\}")[0] is True
    assert math_answers._judge(Extracted(r"\{1, 2\}", "boxed"), "(2, 1)")[0] is False


@pytest.mark.parametrize(
    ("shown", "detail"),
    [("a" * 200, "a" * 200), ("a" * 201, "a" * 200 + "...")],
    ids=["at-the-limit", "past-it"],
)
def test_show_cuts_a_long_expression(shown, detail):
    assert math_answers._show(shown) == detail


@pytest.mark.parametrize(
    ("kwargs", "run_with"),
    [({}, (5.0, 3)), ({"workers": 1}, (5.0, 1)), ({"workers": 2, "timeout_s": 0.5}, (0.5, 2))],
    ids=["defaults", "one-worker", "short-timeout"],
)
def test_defaults_are_five_seconds_and_one_worker_per_usable_cpu(monkeypatch, kwargs, run_with):
    calls = []

    def run(jobs, timeout_s, workers):
        calls.append((timeout_s, workers))
        return {0: "verdict"}

    monkeypatch.setattr(math_answers, "_run", run)
    monkeypatch.setattr(math_answers, "_cpus", lambda: 3)
    assert grade_math([(r"\boxed{1}", "1")], **kwargs) == ["verdict"]
    assert calls == [run_with]
