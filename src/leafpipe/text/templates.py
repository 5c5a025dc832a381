"""Find instruction and response tokens through the tokenizer's own chat template.

The chat template is rendered to text and the user/assistant contents are located in it by
character offsets, so no model-specific token offsets are hard-coded: any template that copies the
content verbatim (`{{ content }}`) or trims its surrounding whitespace (Llama-3, Gemma:
`{{ content | trim }}`) works, and one that changes it otherwise is a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

INSTRUCTION = "instruction"
RESPONSE = "response"
TEMPLATE = "template"


@dataclass(frozen=True)
class EncodedSample:
    """One chat sample as token ids with, per token, where it came from.

    `offsets[i]` are character offsets of token i inside its field's text (the instruction or the
    response string, not the rendered chat), `(-1, -1)` for template tokens. `train_from` is the
    character offset in the response where training starts: a response-level counterfactual
    keeps its pruned earlier reasoning steps as context (the paper's code puts them at the start
    of the assistant turn and trains only the reasoning steps after them), so the corrupted text
    is never a target.
    """

    input_ids: list[int]
    fields: list[str]
    offsets: list[tuple[int, int]]
    train_from: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def loss_mask(self) -> list[bool]:
        """Tokens whose prediction is trained: the response tokens starting at or after
        `train_from`, and the end-of-turn token after the response."""
        response = [f == RESPONSE for f in self.fields]
        mask = [r and start >= self.train_from for r, (start, _) in zip(response, self.offsets)]
        last = max((i for i, r in enumerate(response) if r), default=None)
        if last is not None and last + 1 < len(mask):
            mask[last + 1] = True
        return mask


Turn = tuple[str, str]  # (role, content): a few-shot example's user or assistant message


def _messages(
    instruction: str, response: str | None, system: str | None, history: Sequence[Turn]
) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": role, "content": content} for role, content in history]
    messages.append({"role": "user", "content": instruction})
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def _folded(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The system prompt put at the start of the first user turn, as Gemma's and Mistral's own
    later templates do, for a template that refuses a system role."""
    system, first, *rest = messages
    return [{"role": "user", "content": f"{system['content']}\n\n{first['content']}"}, *rest]


def _render(
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    response: str | None,
    system: str | None = None,
    history: Sequence[Turn] = (),
) -> str:
    """The chat as text. A system prompt is its own message, or, where the template raises on a
    system role, the head of the first user turn; either way it is template text to the
    callers, in neither the instruction's nor the response's tokens."""
    messages = _messages(instruction, response, system, history)
    render = partial(
        tokenizer.apply_chat_template, tokenize=False, add_generation_prompt=response is None
    )
    if system is None:
        return render(messages)
    try:
        return render(messages)
    except TemplateError:
        return render(_folded(messages))


# Stand-ins for the contents when rendering the template's skeleton: private-use characters, which
# no template writes itself and which trimming or case filters leave unchanged.
_INSTRUCTION_SLOT, _RESPONSE_SLOT = "\ue000", "\ue001"


def _locate(text: str, content: str, at: int, what: str) -> tuple[int, int, int]:
    """Where `content` is in `text`, given that the template puts it at `at`.

    Returns (start, end) in `text` and the index in `content` of `text[start]`. Searching from
    where the template's skeleton says the content goes, not from the start of the text, keeps
    a content that also occurs in template text (a default system prompt, a role name such as
    "assistant") from being found there. The content must follow verbatim or with its
    surrounding whitespace trimmed; whitespace a template trims away, or keeps from a partial
    trim, counts as template text.
    """
    if not content.strip():
        raise ValueError(f"the {what} is empty or only whitespace; it has no tokens to find")
    if at >= 0 and text.startswith(content, at):
        return at, at + len(content), 0
    core = content.strip()
    found = text.find(core, at) if at >= 0 else -1
    if found < 0 or text[at:found].strip():
        raise ValueError(
            f"the chat template does not reproduce the {what} verbatim (up to trimmed whitespace) "
            "where it puts message content; leafpipe needs a template that inserts message "
            "content as is ({{ content }} or {{ content | trim }})"
        )
    return found, found + len(core), len(content) - len(content.lstrip())


def encode_sample(
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    response: str,
    train_from: int = 0,
    *,
    system: str | None = None,
) -> EncodedSample:
    """Tokenise a full (instruction, response) chat, labelling each token by field.

    A token that straddles template text and content (a BPE merge across the boundary) is
    labelled with the content's field, its offsets clipped to the content. `train_from`: see
    `EncodedSample`; response tokens starting before it are context, not trained. A `system`
    prompt is rendered before the instruction and labelled as template text, so detection scores
    none of its tokens and training predicts none.
    """
    text = _render(tokenizer, instruction, response, system)
    skeleton = _render(tokenizer, _INSTRUCTION_SLOT, _RESPONSE_SLOT, system)
    instr_at, resp_at = skeleton.find(_INSTRUCTION_SLOT), skeleton.find(_RESPONSE_SLOT)
    if instr_at < 0 or resp_at < instr_at:
        raise ValueError(
            "the chat template drops or reorders the message content; leafpipe needs a template "
            "that inserts the user's, then the assistant's content ({{ content }})"
        )
    instr_lo, instr_hi, instr_lead = _locate(text, instruction, instr_at, INSTRUCTION)
    # The response goes after the template text that separates the two contents in the skeleton.
    between = skeleton[instr_at + len(_INSTRUCTION_SLOT) : resp_at]
    after = text.find(between, instr_hi)
    resp_at = after + len(between) if after >= 0 else -1
    resp_lo, resp_hi, resp_lead = _locate(text, response, resp_at, RESPONSE)
    spans = ((INSTRUCTION, instr_lo, instr_hi, instr_lead), (RESPONSE, resp_lo, resp_hi, resp_lead))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    fields: list[str] = []
    offsets: list[tuple[int, int]] = []
    for start, end in enc["offset_mapping"]:
        for name, lo, hi, lead in spans:
            if start < hi and end > lo:
                fields.append(name)
                offsets.append((max(start, lo) - lo + lead, min(end, hi) - lo + lead))
                break
        else:
            fields.append(TEMPLATE)
            offsets.append((-1, -1))
    return EncodedSample(list(enc["input_ids"]), fields, offsets, train_from)


def prompt_text(
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    *,
    system: str | None = None,
    history: Sequence[Turn] = (),
    prefix: str = "",
) -> str:
    """The chat prompt as text, up to and including the assistant's generation header: the
    `system` prompt, the few-shot `history` turns, the instruction, then `prefix`, the start of
    the assistant's answer that a protocol writes for the model (evalplus's code fence)."""
    return _render(tokenizer, instruction, None, system, history) + prefix


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    instruction: str,
    *,
    system: str | None = None,
    history: Sequence[Turn] = (),
    prefix: str = "",
) -> list[int]:
    """Token ids of `prompt_text`."""
    text = prompt_text(tokenizer, instruction, system=system, history=history, prefix=prefix)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
