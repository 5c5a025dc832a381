import json

import pandas as pd
import pytest

from leafpipe.counterfactuals import build_counterfactuals, prune

TEXT = "Tom has 3 apples. Mia sees 9 birds. Tom buys 4 more. How many apples?"


@pytest.mark.parametrize("span", [" Mia sees 9 birds.", "Mia sees 9 birds.", "9", "birds", "Tom has 3 apples."])
def test_pruning_removes_the_span_and_keeps_the_rest_intact(span):
    start = TEXT.index(span)
    pruned = prune(TEXT, start, start + len(span))
    assert span not in pruned or TEXT.count(span) > 1
    assert "  " not in pruned and not pruned.startswith(" ")
    # Everything outside the span survives unchanged, up to the one joining space.
    assert pruned.replace(" ", "") == (TEXT[:start] + TEXT[start + len(span):]).replace(" ", "")
    assert pruned.startswith(TEXT[:start].rstrip())
    assert pruned.endswith(TEXT[start + len(span):].lstrip())


def test_one_counterfactual_per_span_per_level():
    row = {"id": "x", "instruction": TEXT, "response": "Step 1: 9 birds.\nStep 2: 3 + 4 = 7.\nThe answer is 7."}
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
    spans = [{"field": "instruction", "step": -1, "start": 5, "end": 6},
             {"field": "instruction", "step": -1, "start": 6, "end": 8}]
    det = pd.DataFrame({"id": ["w"], "spans": [json.dumps(spans)]})
    rows = build_counterfactuals([row], det, "instr")
    assert [r["instruction"] for r in rows[1:]] == ["Ben 14 cards. How many?"]
    assert rows[1]["removed"][0]["text"] == "owns"


def test_unknown_level_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown counterfactual level"):
        build_counterfactuals([], pd.DataFrame({"id": [], "spans": []}), "words")
