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
    threshold_flags,
)
from leafpipe.detect.metrics import detection_metrics
from leafpipe.detect.score_variants import minmax
from leafpipe.detect.scoring import ScoreSpec, score_samples
from leafpipe.detect.spans import limit_span_lengths, merge_spans
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
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0
    assert metrics["base_rate"] == 0.2
    planted, other = metrics["mean_scores"]["planted"], metrics["mean_scores"]["other"]
    assert planted["student"] == 1.0 and planted["teacher"] == 0.0 and planted["diff"] == 0.0
    assert other["diff"] == 1.0


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


def test_different_tokenisations_are_aligned_on_characters():
    # The teacher splits "abcd" as [ab][c][d], the student as [a][b][cd]; max over characters.
    teacher = _frame(["a"], [[1.0, 0.0, 0.5]], starts=[0, 2, 3])
    student = _frame(["a"], [[0.0, 0.0, 1.0]], starts=[0, 1, 2])
    tokens = detect(
        teacher,
        student,
        [{"id": "a", "instruction": "abcd"}],
        DetectSpec(strategy="top_k", top_k=1),
    )
    row = tokens.iloc[0]
    assert row["teacher_norm"] == [1.0, 1.0, 0.0]
    assert row["is_confounder"] == [False, False, True]


def test_missing_teacher_sample_is_a_clear_error():
    with pytest.raises(ValueError, match="not for the teacher"):
        detect(_frame(["a"], [[1.0, 0.0]]), _frame(["b"], [[1.0, 0.0]]), [], DetectSpec())


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
