import pytest

from leafpipe.templates import INSTRUCTION, RESPONSE, TEMPLATE, encode_prompt, encode_sample


def test_offsets_point_back_into_their_field(tokenizer, samples):
    instruction, response = samples[0]
    enc = encode_sample(tokenizer, instruction, response)
    instr = "".join(instruction[s:e] for f, (s, e) in zip(enc.fields, enc.offsets) if f == INSTRUCTION)
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


def test_template_without_verbatim_content_is_a_clear_error(tokenizer, samples):
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer,
                              bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|pad|>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
    with pytest.raises(ValueError, match="verbatim"):
        encode_sample(tok, *samples[0])
