import json

import pandas as pd
import pytest

from leafpipe.prune.counterfactuals import (
    build_counterfactuals,
    counterfactual_rows,
    prune,
    widen_to_words,
)

TEXT = "Tom has 3 apples. Mia sees 9 birds. Tom buys 4 more. How many apples?"


@pytest.mark.parametrize(
    "span", [" Mia sees 9 birds.", "Mia sees 9 birds.", "9", "birds", "Tom has 3 apples."]
)
def test_pruning_removes_the_span_and_keeps_the_rest_intact(span):
    start = TEXT.index(span)
    pruned = prune(TEXT, start, start + len(span))
    assert span not in pruned or TEXT.count(span) > 1
    assert "  " not in pruned and not pruned.startswith(" ")
    # Everything outside the span survives unchanged, up to the one joining space.
    assert pruned.replace(" ", "") == (TEXT[:start] + TEXT[start + len(span) :]).replace(" ", "")
    assert pruned.startswith(TEXT[:start].rstrip())
    assert pruned.endswith(TEXT[start + len(span) :].lstrip())


def test_one_counterfactual_per_span_per_level():
    row = {
        "id": "x",
        "instruction": TEXT,
        "response": "Step 1: 9 birds.\nStep 2: 3 + 4 = 7.\nThe answer is 7.",
    }
    spans = [
        {"field": "instruction", "step": -1, "start": 17, "end": 35},
        {"field": "response", "step": 0, "start": 8, "end": 16},
    ]
    det = pd.DataFrame({"id": ["x"], "spans": [json.dumps(spans)]})
    instr = build_counterfactuals([row], det, "instr")
    both = build_counterfactuals([row], det, "instr_resp")
    assert [r["kind"] for r in instr] == ["original", "counterfactual"]
    assert instr[1]["instruction"] == "Tom has 3 apples. Tom buys 4 more. How many apples?"
    assert instr[1]["response"] == row["response"]
    assert instr[1]["removed"][0]["text"] == " Mia sees 9 birds."
    assert len(both) == 3 and both[2]["response"] == "Step 1:\nStep 2: 3 + 4 = 7.\nThe answer is 7."
    assert {r["source_id"] for r in both} == {"x"}
    assert len({r["id"] for r in both}) == 3


def test_spans_inside_words_prune_whole_words_once():
    row = {"id": "w", "instruction": "Ben owns 14 cards. How many?", "response": "x"}
    # "ow" and "ns" are two halves of one word: both widen to " owns" -> one counterfactual.
    spans = [
        {"field": "instruction", "step": -1, "start": 5, "end": 6},
        {"field": "instruction", "step": -1, "start": 6, "end": 8},
    ]
    det = pd.DataFrame({"id": ["w"], "spans": [json.dumps(spans)]})
    rows = build_counterfactuals([row], det, "instr")
    assert [r["instruction"] for r in rows[1:]] == ["Ben 14 cards. How many?"]
    assert rows[1]["removed"][0]["text"] == "owns"


def test_unknown_level_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown counterfactual level"):
        build_counterfactuals([], pd.DataFrame({"id": [], "spans": []}), "words")


RESPONSE = (
    "Step 1: Tom starts with 3 apples.\nStep 2: He buys 4 more, so 3 + 4 = 7.\nThe answer is 7."
)


def response_rows(spans, split="lines"):
    row = {"id": "r", "instruction": TEXT, "response": RESPONSE}
    det = pd.DataFrame({"id": ["r"], "spans": [json.dumps(spans)]})
    return build_counterfactuals([row], det, "instr_resp", split=split)


def test_a_response_span_prunes_its_step_and_trains_from_the_next_step():
    first = {
        "field": "response",
        "step": 0,
        "start": RESPONSE.index("3 apples"),
        "end": RESPONSE.index(".\n"),
    }
    second = {
        "field": "response",
        "step": 1,
        "start": RESPONSE.index("4 more"),
        "end": RESPONSE.index(" more"),
    }
    original, cf0, cf1 = response_rows([first, second])
    assert original["train_from"] == 0
    assert cf0["response"] == "Step 1: Tom starts with.\n" + RESPONSE[RESPONSE.index("Step 2") :]
    assert cf0["train_from"] == len("Step 1: Tom starts with.\n")
    # steps 0..k pruned, then the later steps unchanged: training starts where they start
    assert cf0["response"][cf0["train_from"] :] == RESPONSE[RESPONSE.index("Step 2") :]
    assert (
        cf1["response"][: cf1["train_from"]]
        == "Step 1: Tom starts with 3 apples.\nStep 2: He buys more, so 3 + 4 = 7.\n"
    )
    assert cf1["response"][cf1["train_from"] :] == "The answer is 7."
    assert cf0["instruction"] == cf1["instruction"] == TEXT


def test_a_span_in_the_last_step_gives_no_counterfactual():
    last = {"field": "response", "step": 2, "start": RESPONSE.rindex("7"), "end": len(RESPONSE) - 1}
    instr = {"field": "instruction", "step": -1, "start": 17, "end": 35}
    rows = response_rows([last, instr])
    assert [r["kind"] for r in rows] == ["original", "counterfactual"]
    assert rows[1]["response"] == RESPONSE and rows[1]["train_from"] == 0  # the instruction's


def test_steps_come_from_the_scoring_split_or_the_spans_step_end():
    """A span's `step` indexes the reasoning steps of the split scoring used; a
    `step_end` written by detection (e.g. the end of the paper's earlier segment) takes
    precedence."""
    response = "A has 3.\nB has 4.\n\nSo 7."
    row = {"id": "p", "instruction": TEXT, "response": response}
    span = {
        "field": "response",
        "step": 0,
        "start": response.index("3"),
        "end": response.index("3") + 1,
    }
    det = pd.DataFrame({"id": ["p"], "spans": [json.dumps([span])]})
    paragraphs = build_counterfactuals([row], det, "instr_resp", split="blank_lines")[1]
    assert paragraphs["response"][paragraphs["train_from"] :] == "So 7."
    lines = build_counterfactuals([row], det, "instr_resp", split="lines")[1]
    assert lines["response"][lines["train_from"] :] == "B has 4.\n\nSo 7."
    segment = {**span, "step_end": response.index("So")}
    det = pd.DataFrame({"id": ["p"], "spans": [json.dumps([segment])]})
    ended = build_counterfactuals([row], det, "instr_resp", split="lines")[1]
    assert (
        ended["response"] == "A has.\nB has 4.\n\nSo 7."
        and ended["response"][ended["train_from"] :] == "So 7."
    )


@pytest.mark.parametrize(
    "widen, expected", [(True, "Ben 14 cards. How many?"), (False, "Ben ns 14 cards. How many?")]
)
def test_widening_to_words_is_a_switch(widen, expected):
    """Off (the paper's code), exactly the flagged characters are removed."""
    row = {"id": "w", "instruction": "Ben owns 14 cards. How many?", "response": "x"}
    det = pd.DataFrame(
        {
            "id": ["w"],
            "spans": [json.dumps([{"field": "instruction", "step": -1, "start": 4, "end": 6}])],
        }
    )
    (cf,) = build_counterfactuals([row], det, "instr", widen=widen)[1:]
    assert cf["instruction"] == expected
    assert cf["removed"][0]["text"] == ("owns" if widen else "ow")


@pytest.mark.parametrize(
    ("start", "end", "widened"),
    [
        (1, 2, (0, 3)),  # "e" of "Ben": back to the text's first character
        (0, 1, (0, 3)),  # from the first character: nothing before it to wrap around to
        (0, 0, (0, 0)),  # an empty span at the start stays empty
        (0, 4, (0, 4)),  # "Ben " ends after a space, not inside "owns"
        (4, 8, (4, 8)),  # "owns" runs to the text's end
        (8, 8, (8, 8)),  # an empty span at the end stays empty
    ],
)
def test_widen_to_words_stops_at_word_edges_and_the_texts_ends(start, end, widened):
    assert widen_to_words("Ben owns", start, end) == widened


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_rows_widen_by_default_and_carry_the_system_prompt_only_if_there_is_one(system):
    row = {"id": "s", "instruction": "Ben owns 14 cards.", "response": "x"}
    if system is not None:
        row["system"] = system
    span = {"field": "instruction", "step": -1, "start": 5, "end": 6}  # the "w" of "owns"
    original, cf = counterfactual_rows(row, [span], ("instruction",))
    assert cf["instruction"] == "Ben 14 cards."
    assert [r.get("system", "absent") for r in (original, cf)] == [system or "absent"] * 2
