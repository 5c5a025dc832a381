"""The authors' detection rules behind `detection.rules`, token for token, against leafpipe's
own, and protected text (`detection.protect`)."""

import json

import numpy as np
import pandas as pd
import pytest

from leafpipe.detect.confounders import (
    DetectSpec,
    detect,
    percentile_threshold,
    threshold_flags,
)
from leafpipe.detect.rules import resolved_rules
from leafpipe.detect.score_variants import minmax
from leafpipe.detect.scoring import ScoreSpec, score_samples, segment_starts
from leafpipe.detect.spans import merge_spans, protected_spans
from leafpipe.text.reasoning_steps import reasoning_step_starts

PAPER = {
    "percentile_rule": "index",
    "join_whitespace": False,
    "widen_words": False,
    "response_scopes": "segments",
}
LEAFPIPE = {
    "percentile_rule": "interpolate",
    "join_whitespace": True,
    "widen_words": True,
    "response_scopes": "steps",
}


def _frame(sample_id, tokens, values, column="grad_norm", part="instruction"):
    """Scores in the scorer's long schema for consecutive `tokens` of one part."""
    starts = np.cumsum([0] + [len(t) for t in tokens[:-1]]).tolist()
    return pd.DataFrame.from_records(
        [
            {
                "sample_id": sample_id,
                "part": part,
                "step": -1,
                "position": i,
                "token_id": i,
                "token": t,
                "char_start": a,
                "char_end": a + len(t),
                column: float(v),
            }
            for i, (t, a, v) in enumerate(zip(tokens, starts, values))
        ]
    )


def test_rules_pick_four_settings_and_each_can_be_set_on_its_own():
    assert resolved_rules({}) == PAPER
    assert resolved_rules({"rules": "paper", "percentile_rule": None, "widen_words": None}) == PAPER
    assert resolved_rules({"rules": "leafpipe"}) == LEAFPIPE
    assert resolved_rules(
        {"rules": "leafpipe", "join_whitespace": False, "response_scopes": "segments"}
    ) == {**LEAFPIPE, "join_whitespace": False, "response_scopes": "segments"}
    assert (
        resolved_rules({"rules": "paper", "percentile_rule": "interpolate"})["percentile_rule"]
        == "interpolate"
    )
    spec = DetectSpec(rules="leafpipe", join_whitespace=False)
    assert (spec.percentile_rule, spec.join_whitespace) == ("interpolate", False)
    assert (DetectSpec().percentile_rule, DetectSpec().join_whitespace) == ("index", False)
    with pytest.raises(ValueError, match="unknown detection rules"):
        DetectSpec(rules="mine")


def test_index_percentile_is_the_sorted_value_at_int_n_p():
    diff = np.array([1.0, 0.2, 0.0, 0.5, 0.3, 0.9, 0.8, 0.7, 0.6, 0.4])
    content = np.ones(10, dtype=bool)
    # n = 10, p = 10: sorted(d)[1] = 0.2, so d ≤ 0.2 flags tokens 1 and 2; interpolation puts the
    # 10th percentile at 0 + 0.9 · 0.2 = 0.18 and flags token 2 only.
    assert percentile_threshold(diff, 10, "index") == 0.2
    assert percentile_threshold(diff, 10, "interpolate") == pytest.approx(0.18)
    paper = threshold_flags(diff, content, DetectSpec(percentile=10))
    leafpipe = threshold_flags(diff, content, DetectSpec(percentile=10, rules="leafpipe"))
    assert np.flatnonzero(paper).tolist() == [1, 2]
    assert np.flatnonzero(leafpipe).tolist() == [2]
    # n = 10, p = 35: sorted(d)[3] = 0.4; p = 100 is the largest value, capped at 0.5.
    assert percentile_threshold(diff, 35, "index") == 0.4
    assert np.flatnonzero(threshold_flags(diff, content, DetectSpec(percentile=35))).tolist() == [
        1,
        2,
        4,
        9,
    ]
    assert percentile_threshold(diff, 100, "index") == 1.0
    assert np.flatnonzero(threshold_flags(diff, content, DetectSpec(percentile=100))).tolist() == [
        1,
        2,
        3,
        4,
        9,
    ]


def test_paper_rules_do_not_join_runs_across_whitespace():
    texts = ["Mia", " owns", " 9", " ", "birds", "."]
    fields, steps = ["instruction"] * 6, [-1] * 6
    starts = np.cumsum([0] + [len(t) for t in texts[:-1]]).tolist()
    ends = [a + len(t) for a, t in zip(starts, texts)]
    flags = [False, True, True, False, True, False]
    paper = merge_spans(flags, fields, steps, starts, ends, texts)
    joined = merge_spans(flags, fields, steps, starts, ends, texts, join_whitespace=True)
    assert [(s["start"], s["end"], s["tokens"]) for s in paper] == [(3, 10, [1, 2]), (11, 16, [4])]
    assert [(s["start"], s["end"], s["tokens"]) for s in joined] == [(3, 16, [1, 2, 4])]


def test_detect_applies_the_resolved_rules_end_to_end():
    texts = ["Mia", " owns", " 9", " ", "birds", ".", " Sum", " it", "!", "?"]
    # Both already span [0, 1], so d = (t − s + 1) / 2 = [0.15, 1, 0, 1, 0.05, 1, 1, 1, 1, 1].
    teacher = [0, 1, 0, 1, 0, 1, 1, 1, 1, 1]
    student = [0.7, 0, 1, 0, 0.9, 0, 0, 0, 0, 0]
    corpus = [{"id": "a", "instruction": "".join(texts)}]
    t, s = _frame("a", texts, teacher), _frame("a", texts, student)
    t["grad_x_input"], s["grad_x_input"] = 1.0, 1.0
    for rules, expected in (("paper", [(0, 3), (8, 10), (11, 16)]), ("leafpipe", [(8, 16)])):
        tokens = detect(t, s, corpus, DetectSpec(percentile=20, rules=rules))
        spans = [(x["start"], x["end"]) for x in json.loads(tokens.iloc[0]["spans"])]
        assert spans == expected, rules
    # n = 10, p = 20: index, sorted(d)[2] = 0.15, also flags token 0; interpolation stops at 0.13.
    paper = detect(t, s, corpus, DetectSpec(percentile=20))
    leafpipe = detect(t, s, corpus, DetectSpec(percentile=20, rules="leafpipe"))
    assert np.flatnonzero(paper.iloc[0]["is_confounder"]).tolist() == [0, 2, 4]
    assert np.flatnonzero(leafpipe.iloc[0]["is_confounder"]).tolist() == [2, 4]


REASON = "Please reason step by step."


def test_protected_text_is_never_scored_or_flagged_and_shifts_no_other_score():
    words = ["Tom", " has", " 3", " apples", ".", " Mia", " owns", " 9", " cars", "."]
    instruction_words = [*words, " Please", " reason", " step", " by", " step", "."]
    instruction = "".join(instruction_words)
    rng = np.random.default_rng(0)
    teacher, student = rng.random(len(words)), rng.random(len(words))
    # Protected tokens with extreme scores: in scope they would set both models' min-max range
    # and have the lowest d of all.
    t_all = np.concatenate([teacher, np.full(6, 0.0)])
    s_all = np.concatenate([student, np.full(6, 50.0)])
    corpus = [{"id": "a", "instruction": instruction}]
    t, s = _frame("a", instruction_words, t_all), _frame("a", instruction_words, s_all)
    spec = DetectSpec(strategy="top_k", top_k=2, protect=(REASON,))
    row = detect(t, s, corpus, spec).iloc[0]
    assert protected_spans(instruction, [REASON]) == [(len("".join(words)) + 1, len(instruction))]
    assert row["protected"] == [False] * 10 + [True] * 6
    assert row["kind"][10:] == ["protected"] * 6
    assert not any(row["is_confounder"][10:]) and np.isnan(row["diff"][10:]).all()
    assert row["student_raw"][10:] == [50.0] * 6, "raw scores are kept for inspection"
    # The other tokens' scores are those of the instruction without the protected text.
    np.testing.assert_allclose(row["teacher_norm"][:10], minmax(teacher))
    np.testing.assert_allclose(row["student_norm"][:10], minmax(student))
    unprotected = detect(
        _frame("a", words, teacher), _frame("a", words, student), corpus, spec
    ).iloc[0]
    np.testing.assert_array_equal(row["diff"][:10], unprotected["diff"])
    assert row["is_confounder"][:10] == unprotected["is_confounder"]
    # Without protection the protected tokens are the confounders.
    open_row = detect(t, s, corpus, DetectSpec(strategy="top_k", top_k=2)).iloc[0]
    assert all(i >= 10 for i in np.flatnonzero(open_row["is_confounder"]))


def test_protected_text_is_found_wherever_it_occurs():
    text = f"{REASON} Tom has 3. {REASON}"
    assert protected_spans(text, [REASON, "absent"]) == [
        (0, len(REASON)),
        (len(text) - len(REASON), len(text)),
    ]
    assert protected_spans(text, []) == []


def test_tokens_carry_raw_scores_kinds_and_the_score_variant_reads_its_column():
    texts = ["Tom", " has", " 3", ".", " Mia", " owns", " 9", "."]
    instruction = "".join(texts)
    corpus = [{"id": "a", "instruction": instruction, "distractor_spans": [[10, 22]]}]
    norms_t, norms_s = [1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1]
    gxi_t, gxi_s = [5, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]
    t, s = _frame("a", texts, norms_t), _frame("a", texts, norms_s)
    t["grad_x_input"], s["grad_x_input"] = np.array(gxi_t, float), np.array(gxi_s, float)
    paper = detect(t, s, corpus, DetectSpec(strategy="top_k", top_k=1)).iloc[0]
    gxi = detect(t, s, corpus, DetectSpec(strategy="top_k", top_k=1, score="grad_x_input")).iloc[0]
    for row in (paper, gxi):
        assert (row["teacher_raw"], row["student_raw"]) == (norms_t, norms_s)
        assert (row["teacher_gxi"], row["student_gxi"]) == (gxi_t, gxi_s)
        assert row["kind"] == [
            "other",
            "other",
            "own_number",
            "other",
            "planted_word",
            "planted_word",
            "planted_number",
            "planted_word",
        ]
        assert row["protected"] == [False] * 8
    np.testing.assert_allclose(paper["teacher_norm"], minmax(np.array(norms_t, float)))
    np.testing.assert_allclose(gxi["teacher_norm"], minmax(np.array(gxi_t, float)))
    assert paper["diff"] != gxi["diff"]
    unlabelled = detect(t, s, [{"id": "a", "instruction": instruction}], DetectSpec()).iloc[0]
    assert unlabelled["kind"] == [
        "word",
        "word",
        "number",
        "punctuation",
        "word",
        "word",
        "number",
        "punctuation",
    ]
    with pytest.raises(ValueError, match="grad_x_input"):
        detect(t.drop(columns="grad_x_input"), s, corpus, DetectSpec(score="grad_x_input"))


def test_response_tokens_are_of_kind_response():
    t = pd.concat([_frame("a", ["x", "y"], [1, 0]), _frame("a", ["z"], [np.nan], part="response")])
    tokens = detect(t, t, [{"id": "a", "instruction": "xy", "response": "z"}], DetectSpec())
    assert tokens.iloc[0]["kind"] == ["word", "word", "response"]


def test_the_two_response_scopes_flag_different_tokens(tokenizer, tiny_llama):
    """A three-step response: "segments" scores the first step(s) by the continuation's loss,
    "steps" scores steps 0 and 1 each by the loss of the steps after it."""
    rows = [
        {
            "id": "s0",
            "instruction": "Tom has 3 apples. He buys 4 more. How many apples?",
            "response": "Step 1: Tom starts with 3 apples.\nStep 2: He buys 4 more, so 3 + 4 = 7.\n"
            "Step 3: So he has 7 apples.\nThe answer is 7.",
        }
    ]
    flags = {}
    for scopes in ("segments", "steps"):
        spec = ScoreSpec(response_scopes=scopes)
        teacher = score_samples(tiny_llama(1), tokenizer, rows, spec)
        student = score_samples(tiny_llama(2), tokenizer, rows, spec)
        row = detect(teacher, student, rows, DetectSpec(percentile=20, cap=1.0)).iloc[0]
        response = np.array(row["field"]) == "response"
        flags[scopes] = np.array(row["is_confounder"])[response]
        assert flags[scopes].any()
        spans = [span for span in json.loads(row["spans"]) if span["field"] == "response"]
        # A response span says where the following scope, the counterfactual's target, begins.
        text = rows[0]["response"]
        scope_starts = (
            segment_starts(reasoning_step_starts(text, "lines"), len(text))
            if scopes == "segments"
            else reasoning_step_starts(text, "lines")
        )
        assert spans and all(span["step_end"] == scope_starts[span["step"] + 1] for span in spans)
    assert (flags["segments"] != flags["steps"]).any()
