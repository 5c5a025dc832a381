"""Distillation groups carry their original's system prompt to every sample they encode."""

from __future__ import annotations

import pytest

from leafpipe.distill.data import encode_groups, load_groups
from leafpipe.text.templates import TEMPLATE, encode_sample

SYSTEM = "You are a careful math tutor."


def _rows(samples, system: str | None) -> list[dict]:
    (instruction, response), _ = samples
    extra = {"system": system} if system is not None else {}
    original = {"id": "s", "source_id": "s", "kind": "original", **extra}
    cf = {"id": "s#cf1", "source_id": "s", "kind": "counterfactual", "train_from": 0, **extra}
    return [
        {**original, "instruction": instruction, "response": response},
        {
            **cf,
            "instruction": instruction.replace("Mia owns 9 red cars. ", ""),
            "response": response,
        },
    ]


def test_the_original_and_each_counterfactual_are_encoded_with_the_system_prompt(
    tokenizer, samples
):
    (group,) = load_groups(_rows(samples, SYSTEM))
    assert group.system == SYSTEM
    (encoded,) = encode_groups(tokenizer, [group])
    for sample, (instruction, response, *_) in zip(
        (encoded.original, *encoded.counterfactuals), (group.original, *group.counterfactuals)
    ):
        assert sample == encode_sample(tokenizer, instruction, response, system=SYSTEM)
        template = [i for i, f in zip(sample.input_ids, sample.fields) if f == TEMPLATE]
        assert SYSTEM in tokenizer.decode(template)
    (plain,) = encode_groups(tokenizer, load_groups(_rows(samples, None)))
    assert len(plain.original) < len(encoded.original) and plain.original.loss_mask().count(
        True
    ) == encoded.original.loss_mask().count(True)


def test_a_counterfactual_whose_system_prompt_differs_from_its_original_is_refused(samples):
    rows = _rows(samples, SYSTEM)
    rows[1]["system"] = "Another prompt."
    with pytest.raises(ValueError, match=r"counterfactual 's#cf1': its system prompt is not"):
        load_groups(rows)
    del rows[1]["system"]
    with pytest.raises(ValueError, match="its system prompt is not its original's"):
        load_groups(rows)
