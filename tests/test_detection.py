import json

import numpy as np
import pandas as pd

from leafpipe.detection import DetectSpec, detect, detect_sample, detection_metrics, merge_spans, minmax


def _instr(n):
    return ["instruction"] * n, [-1] * n


def test_lowest_percentile_tokens_are_confounders():
    teacher = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    student = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5])
    fields, steps = _instr(11)
    # d is 0 at token 4, 0.5 at token 10, 1 elsewhere: the 5th percentile (0.25) keeps token 4 only,
    # the 10th (0.5, interpolated) also the tie at 0.5: "at or below".
    res = detect_sample(teacher, student, fields, steps, ["w"] * 11, DetectSpec(percentile=5))
    assert res["is_confounder"].tolist() == [i == 4 for i in range(11)]
    res = detect_sample(teacher, student, fields, steps, ["w"] * 11, DetectSpec(percentile=10))
    assert res["is_confounder"].tolist() == [i in (4, 10) for i in range(11)]
    assert res["diff"][4] == 0.0 and res["diff"].max() == 1.0


def test_cap_limits_the_threshold():
    # d = [0, 0.6, 0.7, 1, 0]: the 50th percentile (0.6) is above the cap 0.5.
    teacher = np.array([0.0, 0.6, 0.7, 1.0, 1.0])
    student = np.array([0.0, 0.0, 0.0, 0.0, 1.0])
    fields, steps = _instr(5)
    uncapped = detect_sample(teacher, student, fields, steps, list("abcde"), DetectSpec(percentile=50, cap=1.0))
    capped = detect_sample(teacher, student, fields, steps, list("abcde"), DetectSpec(percentile=50, cap=0.5))
    assert uncapped["is_confounder"].tolist() == [True, True, False, False, True]
    assert capped["is_confounder"].tolist() == [True, False, False, False, True]


def test_whitespace_is_never_a_confounder():
    teacher = np.array([0.0, 1.0, 1.0, 1.0])
    student = np.array([1.0, 0.0, 0.0, 0.0])
    fields, steps = _instr(4)
    res = detect_sample(teacher, student, fields, steps, [" ", "a", "b", "c"], DetectSpec(percentile=10))
    assert not res["is_confounder"].any()


def test_constant_scores_flag_nothing():
    assert minmax(np.ones(5)) is None
    fields, steps = _instr(5)
    res = detect_sample(np.ones(5), np.arange(5.0), fields, steps, list("abcde"), DetectSpec())
    assert not res["is_confounder"].any()
    res = detect_sample(np.arange(5.0), np.arange(5.0), fields, steps, list("abcde"), DetectSpec())
    assert not res["is_confounder"].any()


def test_response_level_skips_the_last_step():
    fields = ["instruction"] * 3 + ["response"] * 6
    steps = [-1] * 3 + [0, 0, 0, 1, 1, 1]
    teacher = np.array([1, 1, 1, 1, 1, 0.0, 1, 1, 0.0])
    student = np.array([0, 0, 0, 0, 0, 1.0, 0, 0, 1.0])
    res = detect_sample(teacher, student, fields, steps, list("abcdefghi"), DetectSpec(percentile=10))
    assert res["is_confounder"].tolist() == [False] * 5 + [True] + [False] * 3
    off = detect_sample(teacher, student, fields, steps, list("abcdefghi"), DetectSpec(response_level=False))
    assert not off["is_confounder"][3:].any()


def test_spans_merge_across_whitespace_but_not_fields():
    flags = [False, True, False, True, False, True, True]
    fields = ["instruction"] * 5 + ["response"] * 2
    steps = [-1] * 5 + [0, 0]
    texts = ["A", " Mia", " ", "9", " x", "y", "z"]
    starts = [0, 1, 5, 6, 7, 0, 1]
    ends = [1, 5, 6, 7, 9, 1, 2]
    spans = merge_spans(flags, fields, steps, starts, ends, texts)
    assert spans == [
        {"field": "instruction", "step": -1, "start": 1, "end": 7},
        {"field": "response", "step": 0, "start": 0, "end": 2},
    ]


def _frame(ids, norms):
    n = len(norms[0])
    return pd.DataFrame({
        "id": ids, "field": [["instruction"] * n] * len(ids), "step": [[-1] * n] * len(ids),
        "char_start": [list(range(n))] * len(ids), "char_end": [list(range(1, n + 1))] * len(ids),
        "text": [list("abcdefghij"[:n])] * len(ids), "grad_norm": norms, "loss": [0.0] * len(ids),
    })


def test_detect_against_planted_labels():
    teacher = _frame(["a"], [[1, 1, 0, 0, 1, 1, 1, 1, 1, 1]])
    student = _frame(["a"], [[0, 0, 1, 1, 0, 0, 0, 0, 0, 0]])
    corpus = [{"id": "a", "instruction": "abcdefghij", "distractor_spans": [[2, 4]]}]
    tokens = detect(teacher, student, corpus, DetectSpec(percentile=20))
    assert tokens.iloc[0]["is_planted"] == [i in (2, 3) for i in range(10)]
    assert json.loads(tokens.iloc[0]["spans"]) == [{"field": "instruction", "step": -1, "start": 2, "end": 4}]
    metrics = detection_metrics(tokens, DetectSpec(percentile=20))
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0
    assert metrics["base_rate"] == 0.2
    planted, other = metrics["mean_scores"]["planted"], metrics["mean_scores"]["other"]
    assert planted["student"] == 1.0 and planted["teacher"] == 0.0 and planted["diff"] == 0.0
    assert other["diff"] == 1.0


def test_different_tokenisations_are_a_clear_error():
    teacher = _frame(["a"], [[1.0, 0.0, 1.0]])
    student = _frame(["a"], [[0.0, 1.0, 0.0]])
    student.at[0, "char_start"] = [0, 2, 3]
    try:
        detect(teacher, student, [], DetectSpec())
    except ValueError as err:
        assert "tokenise differently" in str(err)
    else:
        raise AssertionError("expected a ValueError")
