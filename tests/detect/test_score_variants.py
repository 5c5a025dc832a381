import math

import numpy as np
import pytest

from leafpipe.detect.score_variants import (
    RATIO_EPSILON,
    RAW_INPUT,
    SCORES,
    normalised_difference,
    rank_scale,
)

# Four tokens; by hand: t̂ = [0, .25, .5, 1], ŝ = [0, 1, .5, 0].
TEACHER = np.array([0.0, 2.0, 4.0, 8.0])
STUDENT = np.array([1.0, 5.0, 3.0, 1.0])


def test_every_score_names_the_scorer_column_it_reads():
    assert set(RAW_INPUT) == set(SCORES)
    assert RAW_INPUT["paper"] == "grad_norm" and RAW_INPUT["grad_x_input"] == "grad_x_input"


@pytest.mark.parametrize("score", ["paper", "grad_x_input"])
def test_paper_and_grad_x_input_combine_min_max_scores_by_difference(score):
    out = normalised_difference(TEACHER, STUDENT, score)
    np.testing.assert_allclose(out.teacher, [0, 0.25, 0.5, 1])
    np.testing.assert_allclose(out.student, [0, 1, 0.5, 0])
    # t̂ − ŝ = [0, −.75, 0, 1], min-max: (x + .75) / 1.75
    np.testing.assert_allclose(out.diff, [3 / 7, 0, 3 / 7, 1])


def test_rank_scores_are_ranks_with_ties_averaged_and_one_outlier_counts_one_step():
    teacher, student = np.array([10.0, 1.0, 2.0, 2.0]), np.array([3.0, 1.0, 100.0, 2.0])
    out = normalised_difference(teacher, student, "rank")
    np.testing.assert_allclose(out.teacher, [1, 0, 0.5, 0.5])  # ranks 4, 1, 2.5, 2.5 → (r − 1) / 3
    np.testing.assert_allclose(
        out.student, [2 / 3, 0, 1, 1 / 3]
    )  # the outlier 100 is just the top rank
    # difference [1/3, 0, −1/2, 1/6], min-max: (x + 1/2) / (5/6)
    np.testing.assert_allclose(out.diff, [1, 0.6, 0, 0.8])
    paper = normalised_difference(teacher, student, "paper")
    assert paper.student[3] < 0.02, "min-max squashes the student's other tokens under the outlier"


def test_ratio_is_the_min_max_log_ratio_with_epsilon():
    assert RATIO_EPSILON == 0.1
    out = normalised_difference(TEACHER, STUDENT, "ratio")
    logs = [0.0, math.log(0.35 / 1.1), 0.0, math.log(1.1 / 0.1)]
    lo, hi = min(logs), max(logs)
    np.testing.assert_allclose(out.diff, [(x - lo) / (hi - lo) for x in logs])
    np.testing.assert_allclose(out.diff, [0.32321, 0, 0.32321, 1], atol=1e-5)


def test_ratio_tells_apart_a_token_only_the_student_uses_from_one_both_use_the_difference_ties():
    # t̂ = [0, .8, 1, .5], ŝ = [.2, 1, 0, .5]: tokens 0 and 1 both have t̂ − ŝ = −.2.
    teacher, student = np.array([0.0, 8.0, 10.0, 5.0]), np.array([2.0, 10.0, 0.0, 5.0])
    paper = normalised_difference(teacher, student, "paper").diff
    assert paper[0] == pytest.approx(paper[1])
    ratio = normalised_difference(teacher, student, "ratio").diff
    assert ratio[0] == 0.0 and ratio[1] > 0.2


@pytest.mark.parametrize("score", SCORES)
def test_a_constant_model_leaves_d_undefined(score):
    out = normalised_difference(np.full(4, 2.0), STUDENT, score)
    assert out.teacher is None and out.diff is None and out.student is not None


@pytest.mark.parametrize("score", SCORES)
def test_d_lies_in_zero_one_and_is_lowest_where_the_student_leans_most(score):
    out = normalised_difference(TEACHER, STUDENT, score)
    assert out.diff.min() == 0.0 and out.diff.max() == 1.0
    assert int(np.argmin(out.diff)) == 1  # the student's top token, the teacher's second lowest


def test_rank_scale_of_a_constant_is_undefined():
    assert rank_scale(np.ones(3)) is None


def test_an_unknown_score_is_an_error():
    with pytest.raises(ValueError, match="unknown detection score"):
        normalised_difference(TEACHER, STUDENT, "entropy")
