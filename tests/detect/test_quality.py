import math

import numpy as np
import pandas as pd
import pytest
from score_rows import score_rows

from leafpipe.detect.confounders import DetectSpec, detect, detection_metrics
from leafpipe.detect.quality import (
    available_scores,
    metrics_by_kind,
    rescore,
    variant_comparison,
    write_csv,
)
from leafpipe.detect.score_variants import SCORES
from leafpipe.report.detection_variants import variants_section

TOP1 = DetectSpec(strategy="top_k", top_k=1, response_level=False)


def _frame(samples, spec=TOP1):
    """tokens.parquet rows built by hand: each sample is (texts, kinds, teacher raw, student raw,
    planted), instruction tokens only, stored scores and flags those of `spec`'s variant."""
    records = []
    for k, (texts, kinds, teacher, student, planted) in enumerate(samples):
        starts = np.cumsum([0] + [len(t) for t in texts[:-1]]).tolist()
        n = len(texts)
        records.append(
            {
                "id": f"s{k}",
                "field": ["instruction"] * n,
                "step": [-1] * n,
                "char_start": starts,
                "char_end": [s + len(t) for s, t in zip(starts, texts)],
                "text": texts,
                "kind": kinds,
                "teacher_raw": teacher,
                "student_raw": student,
                "teacher_gxi": teacher,
                "student_gxi": student,
                "protected": [False] * n,
                "is_planted": planted,
                "teacher_norm": [math.nan] * n,
                "student_norm": [math.nan] * n,
                "diff": [math.nan] * n,
                "is_confounder": [False] * n,
                "spans": "[]",
                "unscored": "{}",
            }
        )
    return rescore(pd.DataFrame.from_records(records), spec, spec.score)


# The student's gradient on token 0 is an outlier (100): min-max squashes its other tokens to
# about 0, so the paper's d is lowest on token 0; by rank, the planted token 2 (the student's
# second highest, the teacher's lowest) has the lowest d. By hand:
#   paper: t̂ = [2/3, 1/3, 0, 1], ŝ = [1, 1/99, 2/99, 0], t̂ − ŝ = [−1/3, .32, −.02, 1] → token 0
#   rank:  t̂ = [2/3, 1/3, 0, 1], ŝ = [1, 1/3, 2/3, 0],   t̂ − ŝ = [−1/3, 0, −2/3, 1] → token 2
#   ratio: log((t̂ + .1)/(ŝ + .1)) = [−.36, 1.37, −.18, 2.40] → token 0
OUTLIER = (
    ["Tom", " has", " 9", " pens"],
    ["other", "other", "planted_number", "other"],
    [3.0, 2.0, 1.0, 4.0],
    [100.0, 2.0, 3.0, 1.0],
    [False, False, True, False],
)


def test_rank_finds_the_planted_token_that_an_outlier_hides_from_the_paper_score():
    variants = variant_comparison(_frame([OUTLIER]), TOP1, [50]).variants.set_index("score")
    assert variants.index.tolist() == list(SCORES)
    assert variants.loc["rank", "precision"] == 1.0 and variants.loc["rank", "recall"] == 1.0
    for score in ("paper", "grad_x_input", "ratio"):
        assert variants.loc[score, "precision"] == 0.0 and variants.loc[score, "recall"] == 0.0
    assert (
        variants.loc["rank", "flagged_planted_number"] == 1.0
        and variants.loc["rank", "flagged_other"] == 0.0
    )
    assert variants.loc["paper", "flagged_other"] == pytest.approx(1 / 3)
    assert variants.loc["paper", "configured"] and not variants.loc["rank", "configured"]
    assert variants["base_rate"].eq(0.25).all()


def test_precision_and_recall_are_not_swapped():
    # Flagged (top 2 of each sample): tokens 0 and 2 of s0, tokens 0 and 3 of s1 (token 1 is
    # whitespace, never flagged). Planted: token 2 of each. One hit: precision 1/4, recall 1/2.
    spec = DetectSpec(strategy="top_k", top_k=2, response_level=False)
    s0 = (
        ["a", " b", " 7", " d"],
        ["other", "other", "planted_number", "other"],
        [0.0, 1.0, 0.0, 1.0],
        [1.0, 0.0, 1.0, 0.0],
        [False, False, True, False],
    )
    s1 = (
        ["e", " ", " 8", " h"],
        ["other", "whitespace", "planted_number", "other"],
        [0.0, 0.0, 1.0, 0.5],
        [1.0, 1.0, 0.0, 0.5],
        [False, False, True, False],
    )
    tokens = _frame([s0, s1], spec)
    assert [list(f) for f in tokens["is_confounder"]] == [
        [True, False, True, False],
        [True, False, False, True],
    ]
    row = variant_comparison(tokens, spec, [50]).variants.set_index("score").loc["paper"]
    assert row["precision"] == pytest.approx(1 / 4) and row["recall"] == pytest.approx(1 / 2)
    assert row["f1"] == pytest.approx(1 / 3)
    assert row["n_tokens"] == 7 and row["n_flagged"] == 4 and row["n_planted"] == 2
    assert row["base_rate"] == pytest.approx(2 / 7)


def test_metrics_by_kind_counts_flags_and_averages_scored_tokens_per_kind():
    tokens = pd.DataFrame(
        [
            {
                "id": "x",
                "field": ["instruction"] * 5 + ["response"],
                "text": ["3", " ", " 9", " 4", " cat", " 3"],
                "kind": [
                    "own_number",
                    "whitespace",
                    "planted_number",
                    "own_number",
                    "other",
                    "response",
                ],
                "teacher_norm": [0.8, 0.5, 0.0, math.nan, 1.0, 0.2],
                "student_norm": [0.6, 0.5, 1.0, math.nan, 0.0, 0.2],
                "diff": [0.6, 0.5, 0.0, math.nan, 1.0, 0.0],
                "is_confounder": [True, False, True, False, False, True],
                "is_planted": [False, False, True, False, False, False],
            }
        ]
    )
    by_kind = metrics_by_kind(tokens).set_index("kind")
    assert by_kind.index.tolist() == ["planted_number", "own_number", "other"], (
        "no whitespace, no response"
    )
    own = by_kind.loc["own_number"]
    assert (own["n_tokens"], own["n_flagged"], own["n_scored"]) == (2, 1, 1)
    assert own["share_flagged"] == 0.5 and own["mean_teacher"] == 0.8 and own["mean_diff"] == 0.6
    assert (
        by_kind.loc["planted_number", "mean_diff"] == 0.0
        and by_kind.loc["other", "share_flagged"] == 0.0
    )


WORDS = [
    "Tom",
    " has",
    " 3",
    " pens",
    ".",
    " Mia",
    " owns",
    " 9",
    " cars",
    ".",
    " Think",
    " first",
    ".",
]
RESPONSE = ["3", " pens", "\n", "so", " 3"]


def _world(n_samples=6, seed=0):
    rng = np.random.default_rng(seed)
    n = len(WORDS) + len(RESPONSE)
    teacher, student, corpus = [], [], []
    for k in range(n_samples):
        teacher += score_rows(f"s{k}", WORDS, RESPONSE, rng.random(n), rng.random(n))
        student += score_rows(f"s{k}", WORDS, RESPONSE, rng.random(n), rng.random(n))
        corpus.append(
            {"id": f"s{k}", "instruction": "".join(WORDS), "distractor_spans": [[15, 34]]}
        )
    return pd.DataFrame(teacher), pd.DataFrame(student), corpus


@pytest.mark.parametrize("rules", ["paper", "leafpipe"])
@pytest.mark.parametrize("score", SCORES)
def test_rescoring_stored_raw_scores_reproduces_detection_with_that_score(score, rules):
    base = DetectSpec(percentile=30, rules=rules, protect=(" Think first.",))
    world = _world()
    stored = detect(*world, base)
    expected = detect(
        *world, DetectSpec(percentile=30, rules=rules, protect=(" Think first.",), score=score)
    )
    again = rescore(stored, base, score)
    for col in ("teacher_norm", "student_norm", "diff"):
        np.testing.assert_array_equal(
            np.concatenate(again[col].to_list()), np.concatenate(expected[col].to_list())
        )
    assert again["is_confounder"].map(list).tolist() == expected["is_confounder"].map(list).tolist()
    assert again["spans"].tolist() == expected["spans"].tolist()
    assert expected["is_confounder"].map(any).any(), "a case where something is flagged"


def test_the_sweep_of_each_variant_meets_its_row_at_the_configured_percentile():
    spec = DetectSpec(percentile=30, protect=(" Think first.",))
    tokens = detect(*_world(), spec)
    comparison = variant_comparison(tokens, spec, [10, 30, 60])
    assert comparison.sweep.columns.tolist() == [
        "score",
        "percentile",
        "precision",
        "recall",
        "f1",
        "n_flagged",
    ]
    at = comparison.sweep[comparison.sweep["percentile"] == 30].set_index("score")
    variants = comparison.variants.set_index("score")
    assert at.index.tolist() == list(SCORES)
    for col in ("precision", "recall", "f1", "n_flagged"):
        np.testing.assert_allclose(at[col], variants[col])
    assert variants.loc["paper", "precision"] == pytest.approx(
        detection_metrics(tokens, spec)["precision"]
    )
    kinds = comparison.by_kind
    assert set(kinds["kind"]) == {
        "planted_number",
        "planted_word",
        "own_number",
        "other",
        "protected",
    }
    assert (kinds.loc[kinds["kind"] == "protected", "n_flagged"] == 0).all()
    assert kinds.groupby("score")["n_tokens"].sum().nunique() == 1, (
        "every variant counts the same tokens"
    )


def test_variants_without_gradient_x_input_scores_are_left_out():
    teacher, student, corpus = _world()
    tokens = detect(
        teacher.drop(columns="grad_x_input"),
        student.drop(columns="grad_x_input"),
        corpus,
        DetectSpec(),
    )
    assert available_scores(tokens) == ["paper", "rank", "ratio"]


def test_variants_section_shows_every_variant_and_kind_with_a_reading_guide(tmp_path):
    comparison = variant_comparison(_frame([OUTLIER]), TOP1, [50])
    write_csv(comparison.variants, tmp_path / "variants.csv")
    write_csv(comparison.by_kind, tmp_path / "by_kind.csv")
    text = variants_section(tmp_path / "variants.csv", tmp_path / "by_kind.csv")
    assert "| paper (configured) | 0.0% | 0.0% | 0.0% | 0.00 | 1 |" in text
    assert "| rank | 100.0% | 100.0% | 100.0% | 4.00 | 1 |" in text
    assert "planted numbers must get a lower d than the problem's own numbers" in text.lower()
    assert "| rank | planted_number | 1 | 100.0% | 0.000 | 0.667 | 0.000 |" in text


def test_variants_section_without_labels_leaves_precision_undefined(tmp_path):
    unlabelled = list(OUTLIER)
    unlabelled[1], unlabelled[4] = ["word", "word", "number", "word"], [False] * 4
    comparison = variant_comparison(_frame([tuple(unlabelled)]), TOP1, [50])
    assert comparison.variants["precision"].isna().all()
    write_csv(comparison.variants, tmp_path / "v.csv")
    write_csv(comparison.by_kind, tmp_path / "k.csv")
    text = variants_section(tmp_path / "v.csv", tmp_path / "k.csv")
    assert "| rank | — | — | — | — | 1 |" in text and "without planted labels" in text.lower()
