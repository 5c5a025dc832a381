import pytest

from leafpipe.evaluation.grading.qa_answers import final_answer, normalize_answer, score_qa


def test_normalisation_drops_case_punctuation_and_articles():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an Apple, a day") == "apple day"


def test_final_answer_takes_the_last_marker_or_the_last_line():
    assert (
        final_answer("Paris is big. The answer is London. Wait, the answer is **Paris**") == "Paris"
    )
    assert final_answer("Thinking...\n\nBerlin\n") == "Berlin"
    assert final_answer("Answer: 1984") == "1984"
    assert final_answer("   ") == ""


def test_exact_match_and_f1_take_the_best_alias():
    s = score_qa("The answer is the United States", ["USA", "United States"])
    assert s.exact_match and s.f1 == 1.0
    partial = score_qa("The answer is Barack Obama Sr.", "Barack Obama")
    assert not partial.exact_match
    assert partial.f1 == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert score_qa("The answer is Rome", "Paris").f1 == 0.0


def test_a_question_needs_a_gold_answer():
    with pytest.raises(ValueError, match="at least one gold"):
        score_qa("x", [])
