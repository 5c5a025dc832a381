"""Find instruction and response tokens through the tokenizer's own chat template.

The chat template is rendered to text and the user/assistant contents are located in it by
character offsets, so no model-specific token offsets are hard-coded: any template that copies the
content verbatim (`{{ content }}`) works, and one that does not is a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

INSTRUCTION = "instruction"
RESPONSE = "response"
TEMPLATE = "template"


@dataclass(frozen=True)
class EncodedSample:
    """One chat sample as token ids with, per token, where it came from.

    `offsets[i]` are character offsets of token i inside its field's text (the instruction or the
    response string, not the rendered chat), `(-1, -1)` for template tokens.
    """

    input_ids: list[int]
    fields: list[str]
    offsets: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.input_ids)

    def loss_mask(self) -> list[bool]:
        """Tokens whose prediction is trained: the response and the end-of-turn token after it."""
        mask = [f == RESPONSE for f in self.fields]
        last = max((i for i, f in enumerate(self.fields) if f == RESPONSE), default=None)
        if last is not None and last + 1 < len(mask):
            mask[last + 1] = True
        return mask


def _render(tokenizer: PreTrainedTokenizerBase, instruction: str, response: str | None) -> str:
    messages = [{"role": "user", "content": instruction}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=response is None
    )


def _locate(text: str, content: str, start: int, what: str) -> tuple[int, int]:
    at = text.find(content, start)
    if at < 0 or not content:
        raise ValueError(
            f"the chat template does not reproduce the {what} verbatim; "
            "leafpipe needs a template that inserts message content as is ({{ content }})"
        )
    return at, at + len(content)


def encode_sample(
    tokenizer: PreTrainedTokenizerBase, instruction: str, response: str
) -> EncodedSample:
    """Tokenise a full (instruction, response) chat, labelling each token by field."""
    text = _render(tokenizer, instruction, response)
    instr_span = _locate(text, instruction, 0, INSTRUCTION)
    resp_span = _locate(text, response, instr_span[1], RESPONSE)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    fields: list[str] = []
    offsets: list[tuple[int, int]] = []
    for start, end in enc["offset_mapping"]:
        for name, (lo, hi) in ((INSTRUCTION, instr_span), (RESPONSE, resp_span)):
            if start < hi and end > lo:
                fields.append(name)
                offsets.append((max(start, lo) - lo, min(end, hi) - lo))
                break
        else:
            fields.append(TEMPLATE)
            offsets.append((-1, -1))
    return EncodedSample(list(enc["input_ids"]), fields, offsets)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, instruction: str) -> list[int]:
    """Token ids of the chat prompt up to and including the assistant's generation header."""
    text = _render(tokenizer, instruction, None)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
