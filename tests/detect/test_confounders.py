import json

import numpy as np
import pandas as pd
import pytest

from leafpipe import stages
from leafpipe.config import validate_config
from leafpipe.detect.confounders import (
    DetectSpec,
    detect,
    detect_sample,
    percentile_threshold,
    threshold_flags,
)
from leafpipe.detect.metrics import detection_metrics, unscored_counts
from leafpipe.detect.score_variants import minmax
from leafpipe.detect.scoring import ScoreSpec, score_samples
from leafpipe.detect.spans import (
    confounder_spans,
    limit_span_lengths,
    merge_spans,
    protected_spans,
)
from leafpipe.files.atomic import write_jsonl
from leafpipe.files.provenance import read_parquet, write_parquet
from leafpipe.stages.specs import stage_config


def _instr(n):
    return ["instruction"] * n, [-1] * n


def test_lowest_percentile_tokens_are_confounders():
    teacher = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    student = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5])
    fields, steps = _instr(11)
    # d is 0 at token 4, 0.5 at token 10, 1 elsewhere: the 5th percentile (sorted d [int(0.55)] = 0)
    # keeps token 4 only, the 10th (sorted d [int(1.1)] = 0.5) also the tie at 0.5: "at or below".
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
    uncapped = detect_sample(
        teacher, student, fields, steps, list("abcde"), DetectSpec(percentile=50, cap=1.0)
    )
    capped = detect_sample(
        teacher, student, fields, steps, list("abcde"), DetectSpec(percentile=50, cap=0.5)
    )
    assert uncapped["is_confounder"].tolist() == [True, True, False, False, True]
    assert capped["is_confounder"].tolist() == [True, False, False, False, True]


def test_whitespace_is_never_a_confounder():
    teacher = np.array([0.0, 1.0, 1.0, 1.0])
    student = np.array([1.0, 0.0, 0.0, 0.0])
    fields, steps = _instr(4)
    res = detect_sample(
        teacher, student, fields, steps, [" ", "a", "b", "c"], DetectSpec(percentile=10)
    )
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
    res = detect_sample(
        teacher, student, fields, steps, list("abcdefghi"), DetectSpec(percentile=10)
    )
    assert res["is_confounder"].tolist() == [False] * 5 + [True] + [False] * 3
    off = detect_sample(
        teacher, student, fields, steps, list("abcdefghi"), DetectSpec(response_level=False)
    )
    assert not off["is_confounder"][3:].any()


NAN = np.nan
INS, RES = "instruction", "response"


@pytest.mark.parametrize(
    ("fields", "steps", "teacher", "student", "protected", "flags", "diff", "unscored"),
    [
        # Two scored tokens are enough to rank: d = [1, 0], sorted d [int(0.2)] = 0 flags token 1.
        ([INS, INS], [-1, -1], [1, 0], [0, 1], None, [0, 1], [1, 0], {}),
        (
            [INS, INS],
            [-1, -1],
            [1, NAN],
            [0, 1],
            None,
            [0, 0],
            [NAN, NAN],
            {"instruction": "non_finite"},
        ),
        (
            [INS, INS],
            [-1, -1],
            [1, 1],
            [0, 1],
            None,
            [0, 0],
            [NAN, NAN],
            {"instruction": "all_equal"},
        ),
        (
            [INS, INS],
            [-1, -1],
            [0, 1],
            [0, 1],
            None,
            [0, 0],
            [NAN, NAN],
            {"instruction": "equal_difference"},
        ),
        # A protected token leaves the scope: the other two alone span [0, 1] in both models.
        ([INS, INS, INS], [-1] * 3, [1, 0, 5], [0, 1, -5], [0, 0, 1], [0, 1, 0], [1, 0, NAN], {}),
        # A one-token instruction is no scope (not an unscored one); the earlier steps are.
        (
            [INS, RES, RES, RES],
            [-1, 0, 0, 1],
            [1, 1, NAN, 0],
            [0, 0, 1, 1],
            None,
            [0] * 4,
            [NAN] * 4,
            {"steps": "non_finite"},
        ),
        # A single response step is the last one: never a scope.
        (
            [INS, INS, RES, RES],
            [-1, -1, 0, 0],
            [1, 0, 1, 0],
            [0, 1, 0, 1],
            None,
            [0, 1, 0, 0],
            [1, 0, NAN, NAN],
            {},
        ),
    ],
)
def test_scopes_are_scored_or_named_unscored_with_their_reason(
    fields, steps, teacher, student, protected, flags, diff, unscored
):
    res = detect_sample(
        np.array(teacher, dtype=float),
        np.array(student, dtype=float),
        fields,
        steps,
        list("abcd")[: len(fields)],
        DetectSpec(),
        None if protected is None else np.array(protected, dtype=bool),
    )
    assert res["is_confounder"].dtype == bool
    assert res["is_confounder"].tolist() == [bool(f) for f in flags]
    np.testing.assert_array_equal(res["diff"], diff)
    assert res["unscored"] == unscored


@pytest.mark.parametrize(
    ("rule", "percentile", "expected"),
    [
        ("index", 50, 2.0),  # sorted d [int(4 * 0.5)]
        ("index", 100, 3.0),  # index 4 is past the end: the largest value
        ("interpolate", 50, 1.5),
        ("interpolate", 25, 0.75),  # position 0.75 between sorted d [0] = 0 and [1] = 1
    ],
)
def test_percentile_threshold_rules(rule, percentile, expected):
    assert percentile_threshold(np.array([3.0, 0.0, 2.0, 1.0]), percentile, rule) == expected


@pytest.mark.parametrize(
    ("diff", "spec", "expected"),
    [
        ([0.25, 0.5], DetectSpec(strategy="absolute", threshold=0.25), [0]),  # "at or below"
        # Ties keep token order: the first three of the nine zeros (an unstable sort need not).
        ([1.0] * 8 + [0.0] * 9, DetectSpec(strategy="top_k", top_k=3), [8, 9, 10]),
    ],
)
def test_threshold_flags_at_the_threshold_and_on_ties(diff, spec, expected):
    flags = threshold_flags(np.array(diff), np.ones(len(diff), dtype=bool), spec)
    assert flags.dtype == bool
    assert np.flatnonzero(flags).tolist() == expected


def test_leafpipe_rules_merge_spans_across_whitespace_but_not_fields():
    flags = [False, True, False, True, False, True, True]
    fields = ["instruction"] * 5 + ["response"] * 2
    steps = [-1] * 5 + [0, 0]
    texts = ["A", " Mia", " ", "9", " x", "y", "z"]
    starts = [0, 1, 5, 6, 7, 0, 1]
    ends = [1, 5, 6, 7, 9, 1, 2]
    spans = merge_spans(flags, fields, steps, starts, ends, texts, join_whitespace=True)
    assert spans == [
        {"field": "instruction", "step": -1, "start": 1, "end": 7, "tokens": [1, 3]},
        {"field": "response", "step": 0, "start": 0, "end": 2, "tokens": [5, 6]},
    ]
    # By default (the authors' rule) the whitespace token ends the first span.
    paper = merge_spans(flags, fields, steps, starts, ends, texts)
    assert [s["tokens"] for s in paper] == [[1], [3], [5, 6]]


def test_response_spans_end_where_the_next_scope_begins():
    fields = [INS, INS, RES, RES, RES, RES, RES]
    steps = [-1, -1, 0, 0, 1, 1, 2]
    starts, ends = [0, 1, 0, 3, 6, 9, 12], [1, 2, 3, 6, 9, 12, 15]
    flags = np.array([1, 0, 0, 1, 0, 1, 0], dtype=bool)
    spans = confounder_spans(flags, fields, steps, starts, ends, list("abcdefg"), DetectSpec())
    assert spans == [
        {"field": INS, "step": -1, "start": 0, "end": 1, "tokens": [0]},
        {"field": RES, "step": 0, "start": 3, "end": 6, "tokens": [3], "step_end": 6},
        {"field": RES, "step": 1, "start": 9, "end": 12, "tokens": [5], "step_end": 12},
    ]


def test_protected_text_is_every_occurrence_and_empty_text_protects_nothing():
    assert protected_spans("abcabc", ["bc", ""]) == [(1, 3), (4, 6)]


def _frame(ids, norms, starts=None):
    """Token scores in the scorer's long schema: one row per token of each sample."""
    records = []
    for sample_id, values in zip(ids, norms):
        cuts = starts or list(range(len(values)))
        ends = cuts[1:] + [cuts[-1] + 1]
        for pos, (value, a, b) in enumerate(zip(values, cuts, ends)):
            records.append(
                {
                    "sample_id": sample_id,
                    "part": "instruction",
                    "step": -1,
                    "position": pos,
                    "token_id": pos,
                    "token": "abcdefghij"[a:b],
                    "char_start": a,
                    "char_end": b,
                    "grad_norm": float(value),
                }
            )
    return pd.DataFrame.from_records(records)


def test_detect_against_planted_labels():
    teacher = _frame(["a"], [[1, 1, 0, 0, 1, 1, 1, 1, 1, 1]])
    student = _frame(["a"], [[0, 0, 1, 1, 0, 0, 0, 0, 0, 0]])
    corpus = [{"id": "a", "instruction": "abcdefghij", "distractor_spans": [[2, 4]]}]
    tokens = detect(teacher, student, corpus, DetectSpec(percentile=20))
    assert tokens.iloc[0]["is_planted"] == [i in (2, 3) for i in range(10)]
    assert json.loads(tokens.iloc[0]["spans"]) == [
        {"field": "instruction", "step": -1, "start": 2, "end": 4}
    ]
    metrics = detection_metrics(tokens, DetectSpec(percentile=20))
    assert metrics["precision"] == metrics["recall"] == metrics["f1"] == 1.0
    assert metrics["base_rate"] == 0.2
    planted, other = metrics["mean_scores"]["planted"], metrics["mean_scores"]["other"]
    assert planted["student"] == 1.0 and planted["teacher"] == 0.0 and planted["diff"] == 0.0
    assert other["diff"] == 1.0


def test_metrics_count_non_whitespace_instruction_tokens_and_average_finite_scores():
    """Tokens: planted hit, unplanted flag, planted whitespace (skipped), planted unscored (NaN),
    other, a flagged response token (skipped), planted miss."""
    tokens = pd.DataFrame(
        {
            "field": [[INS, INS, INS, INS, INS, RES, INS]],
            "text": [["a", "b", " ", "c", "d", "e", "f"]],
            "is_confounder": [[1, 1, 0, 0, 0, 1, 0]],
            "is_planted": [[1, 0, 1, 1, 0, 0, 1]],
            "teacher_norm": [[0.2, 0.4, 0.0, NAN, 1.0, 0.5, 0.3]],
            "student_norm": [[0.8, 0.6, 0.0, NAN, 0.0, 0.5, 0.3]],
            "diff": [[0.0, 0.3, 0.0, NAN, 1.0, 0.5, 0.6]],
            "unscored": ['{"steps": "all_equal"}'],
        }
    )
    metrics = detection_metrics(tokens, DetectSpec())
    # 5 tokens count (a, b, c, d, f): 2 flagged, 3 planted, 1 both.
    assert (metrics["n_tokens"], metrics["n_confounders"], metrics["n_planted"]) == (5, 2, 3)
    assert (metrics["precision"], metrics["recall"]) == pytest.approx((1 / 2, 1 / 3))
    assert metrics["f1"] == pytest.approx(0.4)  # 2 · (1/6) / (5/6)
    assert metrics["base_rate"] == pytest.approx(3 / 5)
    # planted with finite d: a, f; other: b, d.
    assert metrics["mean_scores"] == {
        "planted": pytest.approx({"teacher": 0.25, "student": 0.55, "diff": 0.3}),
        "other": pytest.approx({"teacher": 0.7, "student": 0.3, "diff": 0.65}),
    }
    assert metrics["unscored"]["steps"] == {"non_finite": 0, "all_equal": 1, "equal_difference": 0}


def test_metrics_with_nothing_to_count_are_zero():
    tokens = pd.DataFrame(
        {
            "field": [[INS, RES]],
            "text": [[" ", "e"]],
            "is_confounder": [[0, 1]],
            "is_planted": [[0, 0]],
            "teacher_norm": [[0.0, 1.0]],
            "student_norm": [[1.0, 0.0]],
            "diff": [[0.0, 1.0]],
        }
    )
    metrics = detection_metrics(tokens, DetectSpec())
    assert [metrics[k] for k in ("precision", "recall", "f1", "base_rate")] == [0.0] * 4
    assert metrics["mean_scores"] == {"planted": None, "other": None}
    zeros = {"non_finite": 0, "all_equal": 0, "equal_difference": 0}
    assert metrics["unscored"] == {"instruction": zeros, "steps": zeros}


def test_unscored_scopes_are_counted_by_reason():
    cells = [
        '{"instruction": "non_finite"}',
        "{}",
        '{"instruction": "non_finite", "steps": "all_equal"}',
    ]
    counts = unscored_counts(pd.DataFrame({"unscored": cells}))
    assert counts["instruction"] == {"non_finite": 2, "all_equal": 0, "equal_difference": 0}
    assert counts["steps"] == {"non_finite": 0, "all_equal": 1, "equal_difference": 0}


def test_the_detect_stage_flags_what_the_teacher_needs_less_than_the_student(tmp_path):
    """The stage's order of the sides: d = teacher - student, low where the student leans on a
    token the teacher ignores. Swapped, the seven other tokens would be flagged instead. Its
    metrics then tell precision from recall: 1 of 3 flags is planted, 1 of 2 planted is flagged."""
    scores = {
        "teacher": _frame(["a"], [[1, 1, 0, 1, 1, 0, 0, 1, 1, 1]]),
        "student": _frame(["a"], [[0, 0, 1, 0, 0, 1, 1, 0, 0, 0]]),
    }
    for role, frame in scores.items():
        write_parquet(frame, tmp_path / f"{role}.parquet")
    corpus = tmp_path / "train.jsonl"
    write_jsonl([{"id": "a", "instruction": "abcdefghij", "distractor_spans": [[2, 4]]}], corpus)
    config = validate_config(
        {"models": {"teacher": {}, "student": {}}, "detection": {"percentile": 20}}
    )
    out_tokens, out_metrics = tmp_path / "tokens.parquet", tmp_path / "metrics.json"
    stages.detect(
        stage_config("detect", config, {}),
        tmp_path / "teacher.parquet",
        tmp_path / "student.parquet",
        corpus,
        out_tokens,
        out_metrics,
    )
    # d = [1, 1, 0, 1, 1, 0, 0, 1, 1, 1]: the 20th percentile (sorted d [2] = 0) flags 2, 5, 6.
    flags = read_parquet(out_tokens).iloc[0]["is_confounder"]
    assert [i for i, flag in enumerate(flags) if flag] == [2, 5, 6]
    metrics = json.loads(out_metrics.read_text())
    assert (metrics["precision"], metrics["recall"]) == pytest.approx((1 / 3, 1 / 2))
    assert metrics["f1"] == pytest.approx(2 * (1 / 6) / (1 / 3 + 1 / 2))  # 0.4
    assert (metrics["n_confounders"], metrics["n_planted"]) == (3, 2)


@pytest.mark.parametrize(("reduce", "raw"), [("max", [1.0, 1.0, 0.5]), ("mean", [1.0, 1.0, 0.25])])
def test_different_tokenisations_are_aligned_on_characters(reduce, raw):
    # The teacher splits "abcd" as [ab][c][d], the student as [a][b][cd]: [cd] gets the max or
    # the mean of [c] and [d].
    teacher = _frame(["a"], [[1.0, 0.0, 0.5]], starts=[0, 2, 3])
    student = _frame(["a"], [[0.0, 0.0, 1.0]], starts=[0, 1, 2])
    student.loc[2, "char_end"] = 4
    tokens = detect(
        teacher,
        student,
        [{"id": "a", "instruction": "abcd"}],
        DetectSpec(strategy="top_k", top_k=1, align_reduce=reduce),
    )
    row = tokens.iloc[0]
    assert row["teacher_raw"] == raw
    assert row["teacher_norm"] == [1.0, 1.0, 0.0]
    assert row["is_confounder"] == [False, False, True]


def test_identical_tokenisations_are_matched_position_wise():
    """Even a zero-width token (a special token), which no character alignment could cover."""
    teacher, student = _frame(["a"], [[3.0, 2.0, 1.0]]), _frame(["a"], [[0.0, 1.0, 2.0]])
    for frame in (teacher, student):
        frame.loc[0, "char_end"] = 0
    row = detect(teacher, student, [{"id": "a", "instruction": "abc"}], DetectSpec()).iloc[0]
    assert row["teacher_raw"] == [3.0, 2.0, 1.0]


def test_protected_and_planted_tokens_are_marked_and_of_their_kind():
    teacher, student = _frame(["a"], [[1, 0, 1, 0.5]]), _frame(["a"], [[0, 1, 0, 0.5]])
    corpus = [{"id": "a", "instruction": "abcd", "distractor_spans": [[0, 1]]}]
    row = detect(teacher, student, corpus, DetectSpec(protect=("d",))).iloc[0]
    assert row["protected"] == [False, False, False, True]
    assert row["is_planted"] == [True, False, False, False]
    assert row["kind"] == ["planted_word", "other", "other", "protected"]


def test_missing_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="not for the teacher"):
        detect(_frame(["a"], [[1.0, 0.0]]), _frame(["b"], [[1.0, 0.0]]), [], DetectSpec())
    without_norms = _frame(["a"], [[1.0, 0.0]]).drop(columns="grad_norm")
    with pytest.raises(ValueError, match="needs the scorer column 'grad_norm'"):
        detect(_frame(["a"], [[1.0, 0.0]]), without_norms, [], DetectSpec())


def test_top_k_and_absolute_strategies():
    diff = np.array([0.0, 0.05, 0.3, 1.0, 0.02])
    content = np.array([True, True, True, True, False])
    assert threshold_flags(diff, content, DetectSpec(strategy="top_k", top_k=2)).tolist() == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert threshold_flags(
        diff, content, DetectSpec(strategy="absolute", threshold=0.1)
    ).tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError, match="unknown detection strategy"):
        DetectSpec(strategy="magic")


def test_span_length_limits_drop_spans_and_their_flags():
    flags = np.array([True, False, True, True, True, False, True, True])
    fields, steps = _instr(8)
    texts, starts = list("abcdefgh"), list(range(8))
    ends = [s + 1 for s in starts]
    spans = merge_spans(flags, fields, steps, starts, ends, texts)
    kept = limit_span_lengths(spans, flags, DetectSpec(min_span_tokens=2, max_span_tokens=2))
    assert [(s["start"], s["end"]) for s in kept] == [(6, 8)]
    assert flags.tolist() == [False] * 6 + [True, True]


def test_domain_settings_override_the_default():
    teacher = _frame(["m", "c"], [[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0]])
    student = _frame(["m", "c"], [[0.0, 1.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.5]])
    corpus = [
        {"id": "m", "instruction": "abcd", "domain": "math"},
        {"id": "c", "instruction": "abcd", "domain": "code"},
    ]
    spec = DetectSpec(strategy="top_k", top_k=1)
    tokens = detect(teacher, student, corpus, spec, {"code": DetectSpec(strategy="top_k", top_k=2)})
    assert sum(tokens.iloc[0]["is_confounder"]) == 1 and sum(tokens.iloc[1]["is_confounder"]) == 2


def test_same_tokenizer_pairs_align_exactly_as_position_wise(tokenizer, samples, tiny_llama):
    rows = [{"id": f"s{i}", "instruction": a, "response": b} for i, (a, b) in enumerate(samples)]
    teacher = score_samples(tiny_llama(1), tokenizer, rows, ScoreSpec())
    student = score_samples(tiny_llama(2), tokenizer, rows, ScoreSpec())
    spec = DetectSpec(strategy="top_k", top_k=2)
    position_wise = detect(teacher, student, rows, spec)
    # The same tokens in reverse row order no longer match position-wise, so detection must go
    # through character alignment, and must land on the same result.
    shuffled = teacher.sort_values(["sample_id", "position"], ascending=[True, False])
    via_characters = detect(shuffled, student, rows, spec)
    for column in ("teacher_norm", "diff", "is_confounder"):
        for exact, aligned in zip(position_wise[column], via_characters[column]):
            np.testing.assert_array_equal(exact, aligned)  # NaN (the last step) equals NaN here
    assert position_wise["spans"].tolist() == via_characters["spans"].tolist()
    assert position_wise["is_confounder"].map(sum).sum() > 0
