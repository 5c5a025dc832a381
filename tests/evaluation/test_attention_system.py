"""The attention analysis renders a corpus row's system prompt as training did."""

from __future__ import annotations

import dataclasses

from leafpipe.evaluation.attention import AttentionSample, attention_shares

SYSTEM = "You are a careful math tutor."
CONFOUNDER = "Mia owns 9 red cars."


def test_a_system_prompt_is_context_for_the_attention_shares(tiny_llama, tokenizer, samples):
    model = tiny_llama(0)
    instruction, response = samples[0]
    at = instruction.index(CONFOUNDER)
    plain = AttentionSample(instruction, response, [(at, at + len(CONFOUNDER))])
    prompted = dataclasses.replace(plain, system=SYSTEM)
    shares, prompted_shares = (
        attention_shares(model, tokenizer, [s]).set_index("layer") for s in (plain, prompted)
    )
    assert list(shares.columns) == list(prompted_shares.columns)
    # The system prompt's tokens take some of the response's attention: the instruction gets less.
    for name in ("share_confounder", "share_other"):
        assert (prompted_shares[name] < shares[name]).all(), name
