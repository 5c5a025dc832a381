"""A corpus row's system prompt, in every chat family's real template: rendered, in neither the
instruction's nor the response's scope, never trained on."""

from __future__ import annotations

import pytest
from chat_families import FAMILIES, family_tokenizer

from leafpipe.text.templates import INSTRUCTION, RESPONSE, TEMPLATE, encode_sample

SYSTEM = "You are a careful math tutor. Answer step by step."


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, samples):
    texts = [SYSTEM] + [t for pair in samples for t in pair] * 20
    return request.param, family_tokenizer(request.param, texts)


def _scope_text(enc, field: str, text: str) -> str:
    """The characters of `text` that the tokens labelled `field` cover, in order."""
    return "".join(text[a:b] for f, (a, b) in zip(enc.fields, enc.offsets) if f == field)


def test_the_scopes_are_exactly_the_instruction_and_the_response(family, samples):
    _, tok = family
    instruction, response = samples[0]
    enc = encode_sample(tok, instruction, response, system=SYSTEM)
    assert _scope_text(enc, INSTRUCTION, instruction) == instruction
    assert _scope_text(enc, RESPONSE, response) == response


def test_the_system_prompt_is_rendered_as_template_text(family, samples):
    _, tok = family
    instruction, response = samples[0]
    enc = encode_sample(tok, instruction, response, system=SYSTEM)
    template = [i for i, f in zip(enc.input_ids, enc.fields) if f == TEMPLATE]
    assert SYSTEM in tok.decode(template, clean_up_tokenization_spaces=False)
    assert SYSTEM not in tok.decode(
        [i for i, f in zip(enc.input_ids, enc.fields) if f != TEMPLATE],
        clean_up_tokenization_spaces=False,
    )


def test_no_system_prompt_token_is_trained(family, samples):
    name, tok = family
    instruction, response = samples[1]
    enc = encode_sample(tok, instruction, response, system=SYSTEM)
    trained = [i for i, m in zip(enc.input_ids, enc.loss_mask()) if m]
    assert tok.decode(trained, clean_up_tokenization_spaces=False) == response + FAMILIES[name][3]
