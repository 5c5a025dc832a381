"""Chat-format corpus rows (TRL's dataset formats) as the plain rows every stage reads.

Detection compares two scopes, one instruction and one response, so a chat row must hold exactly
one exchange: an optional system prompt, one user message, one assistant message. Three shapes
carry it (TRL's "conversational" and "prompt-completion" types):

- `messages`: `[{role: system?}, {role: user}, {role: assistant}]`, each with a string `content`;
- `prompt` and `completion` as strings (the prompt is the instruction, rendered in the chat
  template like any instruction);
- `prompt` and `completion` as message arrays: `prompt` the system (optional) and user messages,
  `completion` the one assistant message.

`plain_row` turns each into `{instruction, response, system?, ...the row's other fields}`, the
chat fields consumed, or names the field at fault (`messages[2].role`). A conversation with
several user turns is left out: detection needs one instruction and one response, and a reply
that depends on earlier turns would be scored against an instruction that is not all it read.

A row with `instruction` or `response` is a plain row: any chat-named field it has is an ordinary
extra field, kept as it is, so corpora that were valid before stay byte for byte the same. Its
optional `system` field is the system prompt (null: none).

Chat rows often have no id. One that has none gets `derived_id`: a hash of its system prompt,
instruction and response, so the id stays the same when rows are added, removed or reordered,
and with it the row's place in the validation split (`distill.data.validation_split` hashes ids),
which a row number would not give. Two rows with the same content get the same id; the second is
then a repeat, as any repeated id is.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

MESSAGES, PROMPT, COMPLETION, SYSTEM = "messages", "prompt", "completion", "system"
CHAT_FIELDS = (MESSAGES, PROMPT, COMPLETION, SYSTEM)  # what a chat row may hold
_CHAT_FORMATS = (MESSAGES, PROMPT, COMPLETION)
_ROLES = ("system", "user", "assistant")
# The one exchange detection can score: its roles in order, the system prompt left out.
_EXCHANGE = ["user", "assistant"]


class ChatProblem(NamedTuple):
    """Why a chat row cannot be used: the field at fault (`messages[1].content`) and the reason."""

    field: str
    reason: str


class _Message(NamedTuple):
    where: str  # the message's field name for reasons: "messages[1]", "completion[0]"
    role: str
    content: str


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for reasons a user who wrote JSON can read."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def text_problem(value: Any, missing: bool = False) -> str | None:
    """Why a value is not a usable text (a non-blank string), or None."""
    if missing:
        return "missing"
    if not isinstance(value, str):
        return f"should be a string, not {json_type(value)}"
    return None if value.strip() else "empty"


def is_chat(row: dict[str, Any]) -> bool:
    """Whether a row is in a chat format: it has a chat field and neither plain text field."""
    plain = "instruction" in row or "response" in row
    return not plain and any(name in row for name in _CHAT_FORMATS)


def system_problem(row: dict[str, Any]) -> str | None:
    """Why a row's `system` field is not a system prompt, or None: absent, null or a non-blank
    string. A blank one is refused rather than rendered: templates differ on an empty system
    message (Qwen2's drops its default prompt for it), so it would not mean "none"."""
    value = row.get(SYSTEM)
    if value is None:
        return None
    problem = text_problem(value)
    return None if problem is None else f"{problem}; leave it out, or null, for no system prompt"


def derived_id(row: dict[str, Any]) -> str:
    """The id of a plain row made from a chat row without one: a hash of its content."""
    content = [row.get(SYSTEM), row["instruction"], row["response"]]
    digest = hashlib.sha256(json.dumps(content, ensure_ascii=False).encode("utf-8")).hexdigest()
    return f"chat-{digest[:16]}"


def plain_row(row: dict[str, Any]) -> dict[str, Any] | ChatProblem:
    """The row as `{instruction, response, system?, ...}`: a plain row unchanged, a chat row
    converted (module docstring); a ChatProblem for the first fault of a chat row.

    The caller checks the fields of the plain row as it checks any plain row's: the `id` (kept
    as it is, when the row has one), and a `system` field of a prompt-completion row of strings.
    """
    if not is_chat(row):
        return row
    if MESSAGES in row and (PROMPT in row or COMPLETION in row):
        extra = PROMPT if PROMPT in row else COMPLETION
        return ChatProblem(extra, f"a row has either {MESSAGES} or {PROMPT} and {COMPLETION}")
    found = _from_messages(row) if MESSAGES in row else _from_prompt(row)
    if isinstance(found, ChatProblem):
        return found
    system, instruction, response = found
    rest = {k: v for k, v in row.items() if k not in CHAT_FIELDS}
    head = {"id": rest.pop("id")} if "id" in rest else {}
    with_system = {SYSTEM: system} if system is not None else {}
    return {**head, "instruction": instruction, "response": response, **with_system, **rest}


Exchange = tuple[str | None, str, str]  # (system prompt or None, instruction, response)


def _from_messages(row: dict[str, Any]) -> Exchange | ChatProblem:
    if SYSTEM in row:
        return ChatProblem(SYSTEM, f"a {MESSAGES} row gives its system prompt as a system message")
    messages = _messages(row[MESSAGES], MESSAGES)
    return messages if isinstance(messages, ChatProblem) else _exchange(messages, MESSAGES)


def _from_prompt(row: dict[str, Any]) -> Exchange | ChatProblem:
    """The exchange of a prompt-completion row: two strings, or two message arrays. A `system`
    field of a row of strings is checked by the caller, as a plain row's."""
    prompt = row.get(PROMPT)
    if isinstance(prompt, list):
        return _conversational(row)
    if PROMPT in row and not isinstance(prompt, str):
        return ChatProblem(
            PROMPT, f"should be a string or an array of messages, not {json_type(prompt)}"
        )
    for name in (PROMPT, COMPLETION):
        if (problem := text_problem(row.get(name), name not in row)) is not None:
            return ChatProblem(name, problem)
    return row.get(SYSTEM), prompt, row[COMPLETION]


def _conversational(row: dict[str, Any]) -> Exchange | ChatProblem:
    """The exchange of a prompt and a completion that are message arrays."""
    if SYSTEM in row:
        return ChatProblem(
            SYSTEM, f"a {PROMPT} of messages gives its system prompt as a system message"
        )
    if COMPLETION not in row:
        return ChatProblem(COMPLETION, "missing")
    completion = row[COMPLETION]
    if not isinstance(completion, list):
        return ChatProblem(
            COMPLETION, f"should be an array of messages like {PROMPT}, not {json_type(completion)}"
        )
    if len(completion) != 1:
        return ChatProblem(
            COMPLETION, f"should hold one assistant message, not {len(completion)} messages"
        )
    prompted = _messages(row[PROMPT], PROMPT)
    if isinstance(prompted, ChatProblem):
        return prompted
    answer = _messages(completion, COMPLETION)
    if isinstance(answer, ChatProblem):
        return answer
    if answer[0].role != "assistant":
        return ChatProblem(
            f"{answer[0].where}.role", f"should be 'assistant', not {answer[0].role!r}"
        )
    return _exchange(prompted + answer, PROMPT)


def _messages(value: Any, name: str) -> list[_Message] | ChatProblem:
    """The messages of an array field, each an object with a known role and a non-blank text
    content, or the first that is not."""
    if not isinstance(value, list):
        return ChatProblem(name, f"should be an array of messages, not {json_type(value)}")
    out = []
    for i, message in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(message, dict):
            return ChatProblem(
                where, f"should be an object with role and content, not {json_type(message)}"
            )
        role = message.get("role")
        if (problem := text_problem(role, "role" not in message)) is not None:
            return ChatProblem(f"{where}.role", problem)
        if role not in _ROLES:
            return ChatProblem(f"{where}.role", f"{role!r} is not one of {', '.join(_ROLES)}")
        content = message.get("content")
        if (problem := text_problem(content, "content" not in message)) is not None:
            return ChatProblem(f"{where}.content", problem)
        out.append(_Message(where, role, content))
    return out


def _exchange(messages: list[_Message], name: str) -> Exchange | ChatProblem:
    """(system, instruction, response) of messages that hold one exchange, or what is wrong with
    their roles: a system message only first, then one user and one assistant message."""
    system = messages[0].content if messages and messages[0].role == SYSTEM else None
    body = messages[1:] if system is not None else messages
    for message in body:
        if message.role == SYSTEM:
            return ChatProblem(
                f"{message.where}.role", "a system message comes first or not at all"
            )
    for role, what in (("user", "instruction"), ("assistant", "response")):
        turns = [m for m in body if m.role == role]
        if len(turns) > 1:
            return ChatProblem(
                f"{turns[1].where}.role",
                f"several {role} turns: detection needs one instruction and one response",
            )
        if not turns:
            return ChatProblem(name, f"no {role} message: the {what} is missing")
    if [m.role for m in body] != _EXCHANGE:
        return ChatProblem(f"{body[0].where}.role", "the user message comes before the assistant's")
    return system, body[0].content, body[1].content
