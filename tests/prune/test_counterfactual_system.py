"""A corpus row's system prompt goes unchanged into each of its counterfactuals, and the validity
check renders it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from leafpipe.prune.counterfactuals import build_counterfactuals
from leafpipe.prune.validity import loss_rises

SYSTEM = "You are a careful math tutor."
INSTRUCTION = "Tom has 3 apples. Mia owns 9 red cars. Tom buys 4 more apples. How many now?"
RESPONSE = (
    "Step 1: Tom starts with 3 apples.\nStep 2: He buys 4 more, so 3 + 4 = 7.\nThe answer is 7."
)


def _counterfactuals(row: dict) -> list[dict]:
    start = INSTRUCTION.index("Mia")
    spans = [
        {"field": "instruction", "step": -1, "start": start, "end": start + 20},
        {
            "field": "response",
            "step": 0,
            "start": RESPONSE.index("3"),
            "end": RESPONSE.index("3") + 1,
        },
    ]
    det = pd.DataFrame({"id": [row["id"]], "spans": [json.dumps(spans)]})
    return build_counterfactuals([row], det, "instr_resp")


def test_every_row_made_from_a_row_with_a_system_prompt_carries_it():
    rows = _counterfactuals(
        {"id": "s", "instruction": INSTRUCTION, "response": RESPONSE, "system": SYSTEM}
    )
    assert [r["kind"] for r in rows] == ["original", "counterfactual", "counterfactual"]
    assert all(r["system"] == SYSTEM for r in rows)
    assert rows[1]["instruction"] != INSTRUCTION and rows[2]["response"] != RESPONSE


@pytest.mark.parametrize("system", ["absent", None])
def test_rows_without_a_system_prompt_get_no_system_field(system):
    row = {"id": "s", "instruction": INSTRUCTION, "response": RESPONSE}
    if system is None:
        row["system"] = None
    assert all("system" not in r for r in _counterfactuals(row))


def test_the_validity_check_renders_the_system_prompt(tokenizer, tiny_llama):
    model = tiny_llama(0)
    plain = _counterfactuals({"id": "s", "instruction": INSTRUCTION, "response": RESPONSE})
    prompted = [{**r, "system": SYSTEM} for r in plain]
    rises, prompted_rises = (loss_rises(model, tokenizer, rows) for rows in (plain, prompted))
    assert rises.keys() == prompted_rises.keys() == {"s#cf1", "s#cf2"}
    assert all(rises[k] != pytest.approx(prompted_rises[k], abs=1e-6) for k in rises)
