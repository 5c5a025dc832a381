import pytest
from chat_families import FAMILIES, family_tokenizer

from leafpipe.text.templates import (
    INSTRUCTION,
    RESPONSE,
    TEMPLATE,
    encode_prompt,
    encode_sample,
)


def test_offsets_point_back_into_their_field(tokenizer, samples):
    instruction, response = samples[0]
    enc = encode_sample(tokenizer, instruction, response)
    instr = "".join(
        instruction[s:e] for f, (s, e) in zip(enc.fields, enc.offsets) if f == INSTRUCTION
    )
    resp = "".join(response[s:e] for f, (s, e) in zip(enc.fields, enc.offsets) if f == RESPONSE)
    assert instr == instruction
    assert resp == response


def test_template_tokens_are_never_content(tokenizer, samples):
    instruction, response = samples[0]
    enc = encode_sample(tokenizer, instruction, response)
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id}
    assert all(f == TEMPLATE for i, f in zip(enc.input_ids, enc.fields) if i in special)
    assert enc.fields[0] == TEMPLATE


def test_loss_mask_covers_response_and_end_of_turn(tokenizer, samples):
    enc = encode_sample(tokenizer, *samples[0])
    mask = enc.loss_mask()
    first = enc.fields.index(RESPONSE)
    last = max(i for i, f in enumerate(enc.fields) if f == RESPONSE)
    assert all(mask[first : last + 2])
    assert enc.input_ids[last + 1] == tokenizer.eos_token_id
    assert not any(mask[:first])


def test_prompt_is_prefix_of_full_sample(tokenizer, samples):
    instruction, response = samples[1]
    prompt = encode_prompt(tokenizer, instruction)
    full = encode_sample(tokenizer, instruction, response).input_ids
    assert full[: len(prompt)] == prompt


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{% for m in messages %}{{ m['content'] | upper }}{% endfor %}", "verbatim"),
        (
            "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '<|im_end|>' }}{% endfor %}",
            "drops",
        ),
    ],
)
def test_template_that_changes_or_drops_the_content_is_a_clear_error(
    tokenizer, samples, template, error
):
    tok = tokenizer.__class__(
        tokenizer_object=tokenizer.backend_tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
    )
    tok.chat_template = template
    with pytest.raises(ValueError, match=error):
        encode_sample(tok, *samples[0])


def test_empty_instruction_is_a_clear_error(tokenizer, samples):
    with pytest.raises(ValueError, match="instruction is empty"):
        encode_sample(tokenizer, " \n", samples[0][1])


@pytest.fixture(scope="module", params=["qwen2", "llama3", "gemma"])
def family(request, samples):
    texts = [t for pair in samples for t in pair] * 20
    return request.param, family_tokenizer(request.param, texts)


def _decode(tok, enc, keep) -> str:
    ids = [i for i, k in zip(enc.input_ids, keep) if k]
    return tok.decode(ids, clean_up_tokenization_spaces=False)


def test_content_tokens_decode_to_the_content_in_real_templates(family, samples):
    _, tok = family
    instruction, response = samples[0]
    enc = encode_sample(tok, instruction, response)
    assert _decode(tok, enc, [f == INSTRUCTION for f in enc.fields]) == instruction
    assert _decode(tok, enc, [f == RESPONSE for f in enc.fields]) == response


def test_template_tokens_are_exactly_the_template_text_in_real_templates(family, samples):
    _, tok = family
    instruction, response = samples[0]
    enc = encode_sample(tok, instruction, response)
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}],
        tokenize=False,
    )
    template_text = rendered.replace(instruction, "", 1).replace(response, "", 1)
    assert _decode(tok, enc, [f == TEMPLATE for f in enc.fields]) == template_text
    assert all(f == TEMPLATE for i, f in zip(enc.input_ids, enc.fields) if i in tok.all_special_ids)


def test_loss_mask_is_response_and_end_of_turn_in_real_templates(family, samples):
    name, tok = family
    instruction, response = samples[1]
    enc = encode_sample(tok, instruction, response)
    assert _decode(tok, enc, enc.loss_mask()) == response + FAMILIES[name][3]


def test_only_the_steps_after_train_from_are_trained_in_real_templates(family, samples):
    """A response-level counterfactual: its earlier (pruned) steps are context; the trained tokens
    are exactly the later steps' and the end of turn, and the input is unchanged."""
    name, tok = family
    instruction, response = samples[1]
    later = response.index("Step 2")
    enc = encode_sample(tok, instruction, response, train_from=later)
    assert enc.input_ids == encode_sample(tok, instruction, response).input_ids
    assert _decode(tok, enc, enc.loss_mask()) == response[later:] + FAMILIES[name][3]
    assert all(
        start >= later
        for (start, _), m, f in zip(enc.offsets, enc.loss_mask(), enc.fields)
        if m and f == RESPONSE
    )


def test_prompt_is_prefix_of_full_sample_in_real_templates(family, samples):
    _, tok = family
    instruction, response = samples[1]
    prompt = encode_prompt(tok, instruction)
    assert encode_sample(tok, instruction, response).input_ids[: len(prompt)] == prompt


def test_whitespace_around_content_survives_or_is_trimmed_as_the_template_does(family, samples):
    name, tok = family
    instruction, response = "  " + samples[0][0] + "\n", "\n" + samples[0][1] + " "
    enc = encode_sample(tok, instruction, response)
    trimmed = FAMILIES[name][4]
    for field, text in ((INSTRUCTION, instruction), (RESPONSE, response)):
        expected = text.strip() if trimmed else text
        keep = [f == field for f in enc.fields]
        # Offsets index the untrimmed field text, which is what later stages slice.
        assert "".join(text[s:e] for (s, e), k in zip(enc.offsets, keep) if k) == expected
        assert _decode(tok, enc, keep) == expected


def test_content_that_also_occurs_in_template_text_is_found_in_its_own_turn(samples):
    tok = family_tokenizer("qwen2", [t for pair in samples for t in pair] * 20)
    # The instruction repeats the default system prompt, the response is the assistant's role name.
    instruction, response = "You are a helpful assistant.", "assistant"
    enc = encode_sample(tok, instruction, response)
    starts = [
        i for i, t in enumerate(enc.input_ids) if t == tok.convert_tokens_to_ids("<|im_start|>")
    ]
    first_instr = enc.fields.index(INSTRUCTION)
    first_resp = enc.fields.index(RESPONSE)
    assert starts[1] < first_instr < starts[2] < first_resp
    assert _decode(tok, enc, [f == INSTRUCTION for f in enc.fields]) == instruction
    assert _decode(tok, enc, [f == RESPONSE for f in enc.fields]) == response


def test_token_straddling_template_and_content_is_content_clipped_to_it(samples):
    tok = family_tokenizer("mistral", [t for pair in samples for t in pair] * 20)
    instruction, response = samples[0]
    enc = encode_sample(tok, instruction, response)
    first = enc.fields.index(INSTRUCTION)
    # "[INST] " + "Tom": byte-level BPE pre-tokenises " Tom" as one token, template space included.
    assert tok.decode(enc.input_ids[first : first + 1]).startswith(" ")
    assert enc.offsets[first][0] == 0
    assert (
        "".join(instruction[s:e] for f, (s, e) in zip(enc.fields, enc.offsets) if f == INSTRUCTION)
        == instruction
    )
    assert _decode(tok, enc, [f == RESPONSE for f in enc.fields]) == response
