import re

import pytest

from leafpipe.data.world import WorldConfig, make_world

CFG = WorldConfig(seed=3, n_teacher_train=300, n_student_train=400, n_distill_train=50, n_test=100)


@pytest.fixture(scope="module")
def world():
    return make_world(CFG)


def test_spans_are_exactly_the_planted_sentences(world):
    for row in world["distill_train"] + world["test"]:
        assert row["distractor_spans"]
        for start, end in row["distractor_spans"]:
            sentence = row["instruction"][start:end]
            assert re.fullmatch(r"[A-Z][a-z]+ [a-z ]+\d+ [a-z ]+\.", sentence), sentence
            assert row["answer"] not in sentence.split() or row["shortcut"]


def test_response_ends_with_the_answer(world):
    for row in world["teacher_train"]:
        assert row["response"].splitlines()[-1] == f"The answer is {row['answer']}."
        assert row["response"].startswith("Step 1: ")


def test_shortcut_rate_is_planted_only_in_the_students_split(world):
    def rate(rows):
        distracted = [r for r in rows if r["distractor_spans"]]
        return sum(r["shortcut"] for r in distracted) / len(distracted)

    assert abs(rate(world["student_train"]) - CFG.student_shortcut_p) < 0.07
    for split in ("teacher_train", "test", "distill_train"):
        assert rate(world[split]) < 0.2  # chance: a random distractor number hits the answer


def test_only_the_student_sees_problems_without_distractors(world):
    clean = sum(not r["distractor_spans"] for r in world["student_train"]) / len(
        world["student_train"]
    )
    assert abs(clean - CFG.student_clean_share) < 0.08
    # The teacher must learn to ignore distractors; detection needs something to find.
    for split in ("teacher_train", "distill_train", "test"):
        assert all(r["distractor_spans"] for r in world[split])


def test_answers_stay_within_twice_max_operand(world):
    answers = {int(r["answer"]) for rows in world.values() for r in rows}
    assert max(answers) <= 2 * CFG.max_operand and min(answers) >= 1
    assert max(answers) > CFG.max_operand  # both operations occur


def test_the_worked_sum_is_left_for_the_model_unless_asked_for(world):
    row = world["test"][0]
    assert " = " not in row["response"]
    with_sum = make_world(
        WorldConfig(
            seed=3,
            n_test=3,
            n_teacher_train=1,
            n_student_train=1,
            n_distill_train=1,
            worked_sum=True,
        )
    )["test"]
    assert all(f" = {r['answer']}." in r["response"] for r in with_sum)


def test_clean_test_is_test_without_distractors(world):
    for row, clean in zip(world["test"], world["test_clean"]):
        assert clean["id"] == row["id"] and clean["answer"] == row["answer"]
        kept, pos = [], 0
        for start, end in row["distractor_spans"]:
            kept.append(row["instruction"][pos:start])
            pos = end + 1
        kept.append(row["instruction"][pos:])
        assert clean["instruction"] == " ".join(p.strip() for p in kept if p.strip())
        assert "  " not in clean["instruction"] and clean["distractor_spans"] == []


def test_deterministic_unique_ids_and_no_test_leak(world):
    again = make_world(CFG)
    assert again == world
    ids = [r["id"] for rows in world.values() for r in rows if not r["id"].startswith("test")]
    assert len(ids) == len(set(ids))
    test_problems = {r["instruction"] for r in world["test_clean"]}
    for split in ("teacher_train", "student_train", "distill_train"):
        for row in world[split]:
            core = row["instruction"]
            for start, end in reversed(row["distractor_spans"]):
                core = (core[:start] + core[end + 1 :]).strip()
            assert core not in test_problems
    assert (
        make_world(
            WorldConfig(seed=4, n_test=5, n_teacher_train=5, n_student_train=5, n_distill_train=5)
        )["test"]
        != world["test"][:5]
    )
