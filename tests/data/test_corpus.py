"""Corpus input validation: every non-blank line is a kept row or a skipped one with a true
reason."""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from leafpipe.data.corpus import (
    CorpusError,
    CorpusRead,
    SkippedCorpusRow,
    read_corpus,
    skipped_frame,
)
from leafpipe.evaluation.benchmarks import load_benchmark
from leafpipe.evaluation.rows import BenchmarkFormatError


def _row(row_id: Any = "a", **fields: Any) -> dict[str, Any]:
    return {"id": row_id, "instruction": "What is 2 + 2?", "response": "It is 4.", **fields}


def _lines(path: Path, *lines: dict[str, Any] | str | bytes) -> Path:
    """A JSONL file: dicts are dumped, str and bytes written as they are, one per line."""
    parts = [
        line
        if isinstance(line, bytes)
        else (line if isinstance(line, str) else json.dumps(line)).encode()
        for line in lines
    ]
    path.write_bytes(b"".join(part + b"\n" for part in parts))
    return path


def _words(row: dict[str, Any]) -> int:
    return len(f"{row['instruction']} {row['response']}".split())


# --- kept rows ------------------------------------------------------------------------------


def test_valid_rows_are_kept_in_order_with_extra_fields_unchanged(tmp_path):
    extra = {"answer": "4", "domain": "math", "distractor_spans": [[0, 4]], "meta": {"k": None}}
    path = _lines(tmp_path / "c.jsonl", _row("a", **extra), _row("b"))
    read = read_corpus(path)
    assert read.rows == [_row("a", **extra), _row("b")]
    assert read.skipped == [] and read.input_rows == 2


def test_integer_ids_become_strings_and_collide_with_the_same_string(tmp_path):
    path = _lines(tmp_path / "c.jsonl", _row(7), _row(-3), _row("7"))
    read = read_corpus(path, on_invalid="skip")
    assert [row["id"] for row in read.rows] == ["7", "-3"]
    assert read.skipped == [SkippedCorpusRow(str(path), 3, "7", "id", "'7' repeats line 1")]


def test_crlf_line_endings_and_a_last_line_without_newline_are_read(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(json.dumps(_row("a")).encode() + b"\r\n" + json.dumps(_row("b")).encode())
    assert [row["id"] for row in read_corpus(path).rows] == ["a", "b"]


def test_a_line_separator_inside_a_string_does_not_split_the_row(tmp_path):
    # str.splitlines would cut this line in two at U+2028; JSON allows it raw inside strings.
    path = _lines(
        tmp_path / "c.jsonl",
        json.dumps(_row("a", response="one\u2028two\x0cthree"), ensure_ascii=False),
    )
    assert read_corpus(path).rows[0]["response"] == "one\u2028two\x0cthree"


# --- field rules, in error and skip mode ----------------------------------------------------


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"instruction": "q", "response": "r"}, "id", "missing"),
        (_row(""), "id", "empty"),
        (_row(" \t"), "id", "empty"),
        (_row(True), "id", "should be a string or an integer, not boolean"),
        (_row(None), "id", "should be a string or an integer, not null"),
        (_row(1.5), "id", "should be a string or an integer, not the number 1.5"),
        (_row(["a"]), "id", "should be a string or an integer, not array"),
        ({"id": "a", "response": "r"}, "instruction", "missing"),
        (_row(instruction=" \n "), "instruction", "empty"),
        (_row(instruction=3), "instruction", "should be a string, not number"),
        (_row(instruction={"text": "q"}), "instruction", "should be a string, not object"),
        ({"id": "a", "instruction": "q"}, "response", "missing"),
        (_row(response=""), "response", "empty"),
        (_row(response="\u3000"), "response", "empty"),
        (_row(response=None), "response", "should be a string, not null"),
    ],
)
def test_a_bad_field_is_an_error_naming_file_line_and_field(tmp_path, row, field, reason):
    path = _lines(tmp_path / "corpus.jsonl", _row("first"), "", row)
    with pytest.raises(CorpusError) as err:
        read_corpus(path)
    assert str(err.value) == f"{path}:3: field '{field}': {reason}"
    read = read_corpus(path, on_invalid="skip")
    assert read.rows == [_row("first")]
    assert [(s.line, s.field, s.reason) for s in read.skipped] == [(3, field, reason)]


def test_the_first_problem_of_a_row_decides_its_reason(tmp_path):
    path = _lines(tmp_path / "c.jsonl", _row("ok"), {"id": "", "instruction": "", "response": 5})
    with pytest.raises(CorpusError, match=r":2: field 'id': empty$"):
        read_corpus(path)


def test_skip_mode_lists_every_bad_row_with_its_reason_and_id(tmp_path):
    path = _lines(
        tmp_path / "c.jsonl",
        _row("a"),
        _row("b", response=""),
        "[1]",
        _row(5, instruction=None),
        _row("c"),
    )
    read = read_corpus(path, on_invalid="skip")
    assert [row["id"] for row in read.rows] == ["a", "c"] and read.input_rows == 5
    assert read.skipped == [
        SkippedCorpusRow(str(path), 2, "b", "response", "empty"),
        SkippedCorpusRow(str(path), 3, None, None, "expected a JSON object, got array"),
        SkippedCorpusRow(str(path), 4, "5", "instruction", "should be a string, not null"),
    ]


def test_a_repeated_id_names_the_line_of_its_first_occurrence(tmp_path):
    path = _lines(tmp_path / "c.jsonl", _row("a"), _row("b"), _row("a", response="other"))
    with pytest.raises(CorpusError) as err:
        read_corpus(path)
    assert str(err.value) == f"{path}:3: field 'id': 'a' repeats line 1"


def test_a_skipped_row_does_not_claim_its_id(tmp_path):
    # Line 1 is left out, so line 2 is the only row with id "a" and is kept: nothing lost.
    path = _lines(tmp_path / "c.jsonl", _row("a", response=""), _row("a"))
    read = read_corpus(path, on_invalid="skip")
    assert read.rows == [_row("a")] and [s.line for s in read.skipped] == [1]


def test_a_row_over_max_tokens_is_invalid_and_the_reason_gives_both_numbers(tmp_path):
    path = _lines(
        tmp_path / "c.jsonl", _row("short"), _row("long", response="one two three four five six")
    )
    assert len(read_corpus(path, count_tokens=_words, max_tokens=11).rows) == 2
    with pytest.raises(CorpusError) as err:
        read_corpus(path, count_tokens=_words, max_tokens=8)
    assert str(err.value) == f"{path}:2: too long: 11 tokens, more than max_tokens 8"
    read = read_corpus(path, on_invalid="skip", count_tokens=_words, max_tokens=8)
    assert [row["id"] for row in read.rows] == ["short"] and read.skipped[0].id == "long"


def test_count_tokens_and_max_tokens_go_together_and_bad_arguments_are_refused(tmp_path):
    path = _lines(tmp_path / "c.jsonl", _row())
    with pytest.raises(ValueError, match="together"):
        read_corpus(path, max_tokens=5)
    with pytest.raises(ValueError, match="together"):
        read_corpus(path, count_tokens=_words)
    with pytest.raises(ValueError, match="positive integer"):
        read_corpus(path, count_tokens=_words, max_tokens=0)
    with pytest.raises(ValueError, match="on_invalid"):
        read_corpus(path, on_invalid="drop")  # type: ignore[arg-type]


# --- whole-line problems --------------------------------------------------------------------


def test_non_utf8_bytes_are_named_by_line_and_byte_offset(tmp_path):
    path = _lines(
        tmp_path / "c.jsonl", _row("a"), b'{"id": "b\xff", "instruction": "q", "response": "r"}'
    )
    with pytest.raises(CorpusError) as err:
        read_corpus(path)
    assert str(err.value) == f"{path}:2: not UTF-8: byte 0xff at byte offset 9"
    assert read_corpus(path, on_invalid="skip").skipped[0].field is None


def test_encoded_surrogates_and_lone_surrogate_escapes_are_invalid(tmp_path):
    path = _lines(
        tmp_path / "c.jsonl",
        _row("a"),
        b'{"id": "\xed\xa0\x80"}',
        r'{"id": "c", "instruction": "\ud800", "response": "r"}',
        json.dumps(_row("d", response="\U0001f600")),  # a valid pair, escaped: kept
    )
    read = read_corpus(path, on_invalid="skip")
    assert [row["id"] for row in read.rows] == ["a", "d"] and read.rows[1][
        "response"
    ] == "\U0001f600"
    assert [s.reason for s in read.skipped] == [
        "not UTF-8: byte 0xed at byte offset 8",
        "escape \\ud800 is a lone surrogate, not a character",
    ]


def test_malformed_json_gives_jsons_message_and_column(tmp_path):
    path = _lines(
        tmp_path / "c.jsonl", _row("a"), '{"id": "b", "instruction": "q" "response": "r"}'
    )
    with pytest.raises(CorpusError) as err:
        read_corpus(path)
    assert str(err.value) == f"{path}:2: malformed JSON line: Expecting ',' delimiter (column 32)"


@pytest.mark.parametrize(
    ("line", "kind"), [("[]", "array"), ('"text"', "string"), ("3", "number"), ("null", "null")]
)
def test_a_line_that_is_not_an_object_is_invalid(tmp_path, line, kind):
    path = _lines(tmp_path / "c.jsonl", _row("a"), line)
    with pytest.raises(CorpusError, match=rf":2: expected a JSON object, got {kind}$"):
        read_corpus(path)


def test_blank_lines_are_neither_kept_nor_skipped_but_still_count_as_lines(tmp_path):
    path = _lines(tmp_path / "c.jsonl", "", "  \t", _row("a"), "\r", _row("b", response=""), "")
    read = read_corpus(path, on_invalid="skip")
    assert read.input_rows == 2 and len(read.rows) == 1 and [s.line for s in read.skipped] == [5]


def test_only_json_whitespace_makes_a_line_blank(tmp_path):
    # A form feed or an ideographic space is whitespace to str.strip, not to JSON.
    path = _lines(tmp_path / "c.jsonl", _row("a"), "\x0c", "\u3000")
    read = read_corpus(path, on_invalid="skip")
    assert [(s.line, s.reason.split(":")[0]) for s in read.skipped] == [
        (2, "malformed JSON line"),
        (3, "malformed JSON line"),
    ]


def test_a_byte_order_mark_is_accepted_on_the_first_line_only(tmp_path):
    bom = codecs.BOM_UTF8
    path = _lines(
        tmp_path / "c.jsonl",
        bom + json.dumps(_row("a")).encode(),
        bom + json.dumps(_row("b")).encode(),
    )
    read = read_corpus(path, on_invalid="skip")
    assert read.rows == [_row("a")]
    assert read.skipped[0].line == 2 and "BOM" in read.skipped[0].reason
    # The offset of a bad byte on line 1 counts the mark's three bytes, as a hex editor shows them.
    _lines(path, bom + b'{"id": "\xff"}')
    with pytest.raises(CorpusError) as err:
        read_corpus(path)
    assert str(err.value) == f"{path}:1: not UTF-8: byte 0xff at byte offset 11"


def test_a_file_with_no_valid_row_is_an_error_even_when_skipping(tmp_path):
    path = _lines(tmp_path / "c.jsonl", _row(""), "{", "")
    with pytest.raises(CorpusError) as err:
        read_corpus(path)
    assert str(err.value) == f"{path}:1: field 'id': empty"
    with pytest.raises(CorpusError) as err:
        read_corpus(path, on_invalid="skip")
    assert (
        str(err.value)
        == f"{path}: no valid row: all 2 skipped; the first: {path}:1: field 'id': empty"
    )
    _lines(path, "", " ")
    with pytest.raises(CorpusError, match=r"c\.jsonl: no rows \(the file is empty or blank\)"):
        read_corpus(path, on_invalid="skip")


# --- the result and the skipped table -------------------------------------------------------


def test_corpus_read_refuses_counts_that_do_not_add_up():
    with pytest.raises(ValueError, match="input_rows 3 != 1 kept"):
        CorpusRead(rows=[_row()], skipped=[], input_rows=3)


def test_skipped_frame_has_the_same_schema_empty_and_full(tmp_path):
    empty = skipped_frame([])
    full = skipped_frame(
        [
            SkippedCorpusRow("c.jsonl", 4, None, None, "malformed"),
            SkippedCorpusRow("c.jsonl", 9, "x", "id", "empty"),
        ]
    )
    assert list(empty.columns) == list(full.columns) == ["file", "line", "id", "field", "reason"]
    assert list(empty.dtypes) == list(full.dtypes) and len(empty) == 0
    assert full["line"].dtype == "int64" and pd.api.types.is_string_dtype(full["id"])
    assert full["id"].isna().tolist() == [True, False] and full["field"].tolist()[1] == "id"
    for name, frame in (("empty", empty), ("full", full)):
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
        back = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert list(back.dtypes) == list(frame.dtypes)
    assert pd.read_parquet(tmp_path / "full.parquet")["id"].isna().tolist() == [True, False]


# --- benchmark files use the same line reader -----------------------------------------------


def test_a_user_benchmark_jsonl_names_the_row_of_a_bad_byte_or_line(tmp_path):
    good = '{"id": "a", "instruction": "x", "answer": "1"}'
    path = _lines(tmp_path / "g.jsonl", good, b'{"id": "b\xff", "instruction": "y", "answer": "2"}')
    with pytest.raises(
        BenchmarkFormatError, match=r"g\.jsonl: row 2: not UTF-8: byte 0xff at byte offset 9$"
    ):
        load_benchmark("jsonl", path=path)
    _lines(path, good, '{"id": "b",')
    with pytest.raises(
        BenchmarkFormatError, match=r"g\.jsonl: row 2: malformed JSON line: Expecting"
    ):
        load_benchmark("jsonl", path=path)
    other = json.dumps({"id": "b", "instruction": "y\u2028z", "answer": "2"}, ensure_ascii=False)
    _lines(path, codecs.BOM_UTF8 + good.encode(), "", other)
    assert [r["instruction"] for r in load_benchmark("jsonl", path=path).rows] == ["x", "y\u2028z"]


def test_a_user_benchmark_json_list_names_the_line_of_a_bad_byte(tmp_path):
    path = tmp_path / "g.json"
    path.write_bytes(
        b'[\n  {"problem": "a", "answer": "1"},\n  {"problem": "\xc3(", "answer": "2"}\n]\n'
    )
    with pytest.raises(
        BenchmarkFormatError, match=r"g\.json: line 3: not UTF-8: byte 0xc3 at byte offset 15$"
    ):
        load_benchmark("math500", path=path)
    path.write_bytes(codecs.BOM_UTF8 + b'[{"problem": "a", "answer": "1"}]')
    assert len(load_benchmark("math500", path=path).rows) == 1


# --- fuzzing: random corruptions of a valid file --------------------------------------------

_BLANK = b" \t\r\n"
_FIELDS = ("id", "instruction", "response")
_text = st.text(max_size=12).filter(str.strip)
_valid_row = st.fixed_dictionaries(
    {
        "id": st.one_of(st.integers(-5, 10**12), _text),
        "instruction": _text,
        "response": _text,
    },
    optional={
        "answer": _text,
        "domain": st.sampled_from(["math", "code"]),
        "distractor_spans": st.just([[0, 3]]),
    },
)
_NASTY = [
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xef\xbb\xbf",
    b"\n",
    b"\r",
    b'"',
    b"{",
    b"}",
    b",",
    b"\\",
    rb"\ud800",
    b"\x00",
    b" ",
]
_NEW_VALUES = [None, 0, 7, 1.5, True, [], ["x"], {}, {"a": 1}, "", " \t", "\u3000"]


def _corrupt(data: st.DataObject, lines: list[bytes]) -> list[bytes]:
    """One random corruption of `lines` (each with its line ending)."""
    op = data.draw(
        st.sampled_from(
            ["flip", "insert", "delete", "truncate", "field", "duplicate", "blank", "bom"]
        )
    )
    k = data.draw(st.integers(0, max(len(lines) - 1, 0)))
    if not lines:
        return [b"\n"] if op == "blank" else lines
    line = lines[k]
    at = data.draw(st.integers(0, len(line)))
    if op == "flip" and line:
        at = min(at, len(line) - 1)
        line = line[:at] + bytes([line[at] ^ data.draw(st.integers(1, 255))]) + line[at + 1 :]
    elif op == "insert":
        line = line[:at] + data.draw(st.sampled_from(_NASTY)) + line[at:]
    elif op == "delete":
        line = line[:at] + line[at + data.draw(st.integers(1, 4)) :]
    elif op == "truncate":
        line = line[:at] + b"\n"
    elif op == "field":
        try:
            row = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError too
            return lines
        if not isinstance(row, dict):
            return lines
        name = data.draw(st.sampled_from([*_FIELDS, "answer"]))
        if data.draw(st.booleans()):
            row.pop(name, None)
        else:
            row[name] = data.draw(st.sampled_from(_NEW_VALUES))
        # surrogatepass: a lone surrogate from an inserted \ud800 escape becomes invalid UTF-8
        # bytes.
        line = (
            json.dumps(row, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass")
            + b"\n"
        )
    elif op == "duplicate":
        return [*lines[: at % (len(lines) + 1)], line, *lines[at % (len(lines) + 1) :]]
    elif op == "blank":
        return [
            *lines[:k],
            data.draw(st.sampled_from([b"\n", b"  \n", b"\t\r\n", b"\r\n"])),
            *lines[k:],
        ]
    elif op == "bom":
        lines = [codecs.BOM_UTF8 + lines[0], *lines[1:]]
        return lines
    return [*lines[:k], line, *lines[k + 1 :]]


def _non_blank(content: bytes) -> dict[int, bytes]:
    """Line number -> bytes of each line that is a row: split on b"\\n", a BOM allowed on line 1."""
    found = {}
    for number, raw in enumerate(content.split(b"\n"), 1):
        raw = raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw
        if raw.strip(_BLANK):
            found[number] = raw
    return found


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _assert_reason_holds(
    raw: bytes, bad: SkippedCorpusRow, earlier_ids: set[str], limit: int | None
) -> None:
    """The skipped row really has the problem its field and reason state."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        assert (bad.field, bad.reason[:9]) == (None, "not UTF-8")
        return
    except ValueError:
        assert (bad.field, bad.reason[:19]) == (None, "malformed JSON line")
        return
    if not isinstance(value, dict):
        assert (bad.field, bad.reason[:22]) == (None, "expected a JSON object")
        return
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        assert bad.field is None and "lone surrogate" in bad.reason
        return
    row_id = value.get("id")
    usable_id = (isinstance(row_id, int) and not isinstance(row_id, bool)) or _is_text(row_id)
    if not usable_id:
        assert bad.field == "id" and bad.id is None
    elif not all(_is_text(value.get(name)) for name in ("instruction", "response")):
        first = next(name for name in ("instruction", "response") if not _is_text(value.get(name)))
        assert bad.field == first and bad.id == str(row_id)
    elif str(row_id) in earlier_ids:
        assert bad.field == "id" and "repeats line" in bad.reason
    else:
        assert limit is not None and bad.field is None and bad.reason.startswith("too long")


def _assert_kept_rows_pass_the_rules(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        assert isinstance(row["id"], str) and row["id"].strip()
        assert _is_text(row["instruction"]) and _is_text(row["response"])
    assert len({row["id"] for row in rows}) == len(rows)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rows=st.lists(_valid_row, min_size=1, max_size=5, unique_by=lambda row: str(row["id"])),
    crlf=st.booleans(),
    limit=st.one_of(st.none(), st.integers(1, 8)),
    data=st.data(),
)
def test_random_corruptions_lose_nothing_and_keep_nothing_wrong(
    tmp_path_factory, rows, crlf, limit, data
):
    ending = b"\r\n" if crlf else b"\n"
    lines = [json.dumps(row, ensure_ascii=False).encode() + ending for row in rows]
    for _ in range(data.draw(st.integers(0, 4))):
        lines = _corrupt(data, lines)
    content = b"".join(lines)
    path = tmp_path_factory.mktemp("fuzz") / "corpus.jsonl"
    path.write_bytes(content)
    tokens = {"count_tokens": _words, "max_tokens": limit} if limit is not None else {}
    rows_at = _non_blank(content)

    try:
        read = read_corpus(path, on_invalid="skip", **tokens)
    except CorpusError as err:
        # Only a file without a valid row may fail in skip mode; error mode then stops at its first
        # line.
        message = str(err)
        event(
            "no valid row"
        )  # events: what the examples covered, shown by --hypothesis-show-statistics
        expected = (
            f"all {len(rows_at)} skipped" if rows_at else "no rows (the file is empty or blank)"
        )
        assert message.startswith(f"{path}: no") and expected in message
        first = f"{path}:{min(rows_at)}:" if rows_at else f"{path}: no rows"
        with pytest.raises(CorpusError, match="^" + re.escape(first)):
            read_corpus(path, **tokens)
        return

    assert read.input_rows == len(read.rows) + len(read.skipped) == len(rows_at)
    _assert_kept_rows_pass_the_rules(read.rows)
    skipped_at = [bad.line for bad in read.skipped]
    assert skipped_at == sorted(set(skipped_at)) and set(skipped_at) <= set(rows_at)
    kept_at = [number for number in rows_at if number not in set(skipped_at)]
    kept_ids = {number: row["id"] for number, row in zip(kept_at, read.rows, strict=True)}
    for number, row in zip(kept_at, read.rows, strict=True):
        # A kept row is its line's object, unchanged but for an integer id made a string.
        original = json.loads(rows_at[number].decode("utf-8"))
        assert json.dumps(row) == json.dumps({**original, "id": str(original["id"])})
    for bad in read.skipped:
        kind = "repeats" if "repeats line" in bad.reason else bad.reason.split(" ")[0].strip(":")
        event(f"skipped: {bad.field or 'line'}: {kind}")
        assert bad.file == str(path) and bad.line >= 1 and bad.reason
        earlier = {row_id for number, row_id in kept_ids.items() if number < bad.line}
        _assert_reason_holds(rows_at[bad.line], bad, earlier, limit)

    if not read.skipped:
        event("all kept")
        assert read_corpus(path, **tokens) == read
    else:
        with pytest.raises(CorpusError) as err:
            read_corpus(path, **tokens)
        assert str(err.value).startswith(f"{path}:{read.skipped[0].line}:")
        assert str(err.value) == read.skipped[0].message()
