"""Chat-format corpus rows (TRL's `messages` and `prompt`/`completion`) become plain rows with
their system prompt; malformed ones are skipped naming the field at fault."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from leafpipe.data.chat_rows import derived_id
from leafpipe.data.corpus import CorpusError, LineProblem, check_rows, read_corpus

SYSTEM = "You are a careful math tutor."
QUESTION = "What is 2 + 2?"
ANSWER = "2 + 2 = 4.\nThe answer is 4."


def _msg(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": content}


def _chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**fields, "messages": list(messages)}


EXCHANGE = (_msg("user", QUESTION), _msg("assistant", ANSWER))


def _read(tmp_path: Path, *rows: dict[str, Any]):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return read_corpus(path, on_invalid="skip")


def test_a_messages_row_becomes_instruction_response_and_system(tmp_path):
    read = _read(tmp_path, _chat(_msg("system", SYSTEM), *EXCHANGE, id="q1", domain="math"))
    assert read.rows == [
        {
            "id": "q1",
            "instruction": QUESTION,
            "response": ANSWER,
            "system": SYSTEM,
            "domain": "math",
        }
    ]


def test_a_row_without_system_prompt_gets_no_system_field(tmp_path):
    row = _read(tmp_path, _chat(*EXCHANGE, id=3)).rows[0]
    assert row == {"id": "3", "instruction": QUESTION, "response": ANSWER}


def test_prompt_completion_rows_of_strings_and_of_messages_give_the_same_row(tmp_path):
    strings = {"id": "a", "prompt": QUESTION, "completion": ANSWER, "system": SYSTEM}
    messages = {
        "id": "b",
        "prompt": [_msg("system", SYSTEM), _msg("user", QUESTION)],
        "completion": [_msg("assistant", ANSWER)],
    }
    read = _read(tmp_path, strings, messages)
    assert [{**r, "id": None} for r in read.rows] == [
        {"id": None, "instruction": QUESTION, "response": ANSWER, "system": SYSTEM}
    ] * 2


def test_a_chat_row_without_id_gets_one_from_its_content_in_any_order(tmp_path):
    first = _chat(*EXCHANGE)
    second = _chat(_msg("system", SYSTEM), *EXCHANGE)
    ids = [row["id"] for row in _read(tmp_path, first, second).rows]
    assert ids[0] != ids[1] and all(i.startswith("chat-") for i in ids)
    assert [row["id"] for row in _read(tmp_path, second, first).rows] == ids[::-1]
    plain = {"instruction": QUESTION, "response": ANSWER}
    assert ids[0] == derived_id(plain) != derived_id({**plain, "system": SYSTEM}) == ids[1]


def test_the_same_conversation_twice_without_ids_is_a_repeat(tmp_path):
    read = _read(tmp_path, _chat(*EXCHANGE), _chat(*EXCHANGE))
    assert len(read.rows) == 1 and read.skipped[0].field == "id"
    assert "repeats line 1 (the same system prompt, instruction and response)" in (
        read.skipped[0].reason
    )


def test_a_plain_row_keeps_chat_named_fields_as_they_are(tmp_path):
    row = {"id": "p", "instruction": QUESTION, "response": ANSWER, "messages": [1], "prompt": 2}
    assert _read(tmp_path, row).rows == [row]


def test_a_plain_row_system_field_is_a_system_prompt_or_null(tmp_path):
    plain = {"instruction": QUESTION, "response": ANSWER}
    read = _read(
        tmp_path,
        {"id": "a", **plain, "system": SYSTEM},
        {"id": "b", **plain, "system": None},
        {"id": "c", **plain, "system": " "},
        {"id": "d", **plain, "system": ["x"]},
    )
    assert [r["id"] for r in read.rows] == ["a", "b"] and read.rows[1]["system"] is None
    assert [(s.id, s.field, s.reason.split(";")[0]) for s in read.skipped] == [
        ("c", "system", "empty"),
        ("d", "system", "should be a string, not array"),
    ]


MALFORMED = [
    (_chat(_msg("user", QUESTION), _msg("assistant", ANSWER), _msg("user", "And 3 + 3?"),
           _msg("assistant", "6")),
     "messages[2].role", "several user turns: detection needs one instruction and one response"),
    (_chat(_msg("user", QUESTION), _msg("assistant", "4"), _msg("assistant", "Sure.")),
     "messages[2].role", "several assistant turns"),
    (_chat(_msg("user", QUESTION), _msg("system", SYSTEM), _msg("assistant", ANSWER)),
     "messages[1].role", "a system message comes first or not at all"),
    (_chat(_msg("user", QUESTION)), "messages", "no assistant message: the response is missing"),
    (_chat(_msg("system", SYSTEM), _msg("assistant", ANSWER)),
     "messages", "no user message: the instruction is missing"),
    (_chat(_msg("assistant", ANSWER), _msg("user", QUESTION)),
     "messages[0].role", "the user message comes before the assistant's"),
    (_chat(_msg("user", QUESTION), _msg("tool", "{}")),
     "messages[1].role", "'tool' is not one of system, user, assistant"),
    (_chat(_msg("user", QUESTION), {"role": "assistant"}), "messages[1].content", "missing"),
    (_chat(_msg("user", " \n"), _msg("assistant", ANSWER)), "messages[0].content", "empty"),
    (_chat(_msg("user", [{"type": "text", "text": QUESTION}]), _msg("assistant", ANSWER)),
     "messages[0].content", "should be a string, not array"),
    (_chat(_msg(7, QUESTION)), "messages[0].role", "should be a string, not number"),
    (_chat("hello"), "messages[0]", "should be an object with role and content, not string"),
    ({"messages": {"user": QUESTION}}, "messages", "should be an array of messages, not object"),
    (_chat(*EXCHANGE, system=SYSTEM), "system", "gives its system prompt as a system message"),
    ({**_chat(*EXCHANGE), "prompt": QUESTION}, "prompt", "a row has either messages or prompt"),
    ({"prompt": QUESTION}, "completion", "missing"),
    ({"prompt": QUESTION, "completion": ""}, "completion", "empty"),
    ({"prompt": 4, "completion": ANSWER}, "prompt", "should be a string or an array of messages"),
    ({"prompt": [_msg("user", QUESTION)], "completion": ANSWER},
     "completion", "should be an array of messages like prompt, not string"),
    ({"prompt": [_msg("user", QUESTION)], "completion": []},
     "completion", "should hold one assistant message, not 0 messages"),
    ({"prompt": [_msg("user", QUESTION)], "completion": [_msg("user", ANSWER)]},
     "completion[0].role", "should be 'assistant', not 'user'"),
    ({"prompt": [_msg("system", SYSTEM)], "completion": [_msg("assistant", ANSWER)]},
     "prompt", "no user message: the instruction is missing"),
    ({"prompt": [*EXCHANGE, _msg("user", "And 3 + 3?")], "completion": [_msg("assistant", "6")]},
     "prompt[2].role", "several user turns"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "field", "reason"), MALFORMED)
def test_a_malformed_chat_row_is_skipped_naming_its_field(tmp_path, row, field, reason):
    read = _read(tmp_path, _chat(*EXCHANGE, id="good"), {"id": "bad", **row})
    assert [r["id"] for r in read.rows] == ["good"]
    (bad,) = read.skipped
    assert (bad.line, bad.id, bad.field) == (2, "bad", field) and reason in bad.reason
    assert bad.message().endswith(f"chat.jsonl:2: field '{field}': {bad.reason}")
    with pytest.raises(CorpusError) as err:
        read_corpus(tmp_path / "chat.jsonl")
    assert str(err.value) == bad.message()


def test_a_bad_id_of_a_chat_row_is_named_before_its_messages(tmp_path):
    read = _read(tmp_path, _chat(*EXCHANGE, id="ok"), _chat(_msg("user", QUESTION), id=""))
    assert (read.skipped[0].field, read.skipped[0].reason) == ("id", "empty")


def test_rows_from_any_reader_are_normalised_too():
    """`check_rows` is what a built corpus (a hub dataset's rows) goes through as well."""
    numbered: list[tuple[int, dict[str, Any] | LineProblem]] = [
        (1, _chat(_msg("system", SYSTEM), *EXCHANGE)),
        (2, {"prompt": QUESTION, "completion": ANSWER}),
    ]
    read = check_rows(numbered, "hub:owner/data")
    assert [r.get("system") for r in read.rows] == [SYSTEM, None]
    assert all(r["instruction"] == QUESTION and r["response"] == ANSWER for r in read.rows)


def test_the_token_cutoff_counts_the_normalised_row_with_its_system_prompt(tmp_path):
    def words(row: dict[str, Any]) -> int:
        return len(" ".join([row.get("system") or "", row["instruction"], row["response"]]).split())

    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(_chat(_msg("system", SYSTEM), *EXCHANGE)) + "\n")
    assert read_corpus(path, count_tokens=words, max_tokens=20).rows
    with pytest.raises(CorpusError, match="too long: 20 tokens, more than max_tokens 19"):
        read_corpus(path, count_tokens=words, max_tokens=20 - 1)
