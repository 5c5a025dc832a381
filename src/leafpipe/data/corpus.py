"""Reading the distillation corpus: every input line is either a valid row or a listed skip.

The corpus is the user's file, so this is where bad input must be caught: a row that is lost
silently, or kept while wrong (an empty response, an id that repeats), skews every later stage
without an error. `read_corpus` either stops at the first bad row with `file:line: field 'f':
reason`, or (`on_invalid="skip"`) leaves the row out and lists it, so that
`input_rows == len(rows) + len(skipped)` always holds and the skipped rows can be shown
(`skipped_frame`, the schema of corpus/skipped.parquet).

Lines are split on b"\\n" only and decoded one by one, so a bad byte is named by its line and
offset, and a U+2028 or form feed inside a string does not split a row the way `str.splitlines`
would.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from leafpipe.data.chat_rows import (
    ChatProblem,
    derived_id,
    is_chat,
    json_type,
    plain_row,
    system_problem,
    text_problem,
)

if TYPE_CHECKING:
    import pandas as pd

# Only JSON's own whitespace makes a line blank: any other character is a row that is malformed.
_JSON_BLANK = b" \t\r\n"
# JSON escapes \ud800-\udfff decode to lone surrogates when unpaired; they cannot be written as
# UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_REQUIRED_TEXT = ("instruction", "response")


class CorpusError(ValueError):
    """A corpus that cannot be used as given; the message names the file and, for a row, its
    line."""


@dataclass(frozen=True)
class LineProblem:
    """Why a non-blank line holds no JSON object: a reason about the whole line."""

    reason: str


@dataclass(frozen=True)
class SkippedCorpusRow:
    """A row left out: where it is, its id when it had a usable one, the field at fault (None: the
    whole line) and why. One row of corpus/skipped.parquet."""

    file: str
    line: int
    id: str | None
    field: str | None
    reason: str

    def message(self) -> str:
        """`file:line: field 'f': reason`, the field part left out for a problem with the whole
        line."""
        place = f" field '{self.field}':" if self.field is not None else ""
        return f"{self.file}:{self.line}:{place} {self.reason}"


@dataclass(frozen=True)
class CorpusRead:
    """The kept rows in file order and the skipped ones; every non-blank input line is one of
    them."""

    rows: list[dict[str, Any]]
    skipped: list[SkippedCorpusRow]
    input_rows: int

    def __post_init__(self) -> None:
        # The promise, checked where the result is made: nothing lost.
        if self.input_rows != len(self.rows) + len(self.skipped):
            raise ValueError(
                f"input_rows {self.input_rows} != {len(self.rows)} kept + "
                f"{len(self.skipped)} skipped"
            )


def not_utf8(err: UnicodeDecodeError, shift: int = 0) -> str:
    """The reason for bytes that are not UTF-8: the first bad byte and its 0-based byte offset
    (plus `shift`, for bytes removed before decoding, such as a BOM)."""
    return f"not UTF-8: byte {err.object[err.start]:#04x} at byte offset {err.start + shift}"


def parse_line(raw: bytes, *, first: bool = False) -> dict[str, Any] | LineProblem | None:
    """One line's JSON object, or why it has none; None for a blank line.

    A blank line (only spaces, tabs, CR, LF) is not a row: it is neither kept nor skipped, since
    editors leave them at the ends of files. A UTF-8 byte-order mark is accepted on the first line
    (`first`) only; elsewhere it is malformed JSON.
    """
    shift = 0
    if first and raw.startswith(codecs.BOM_UTF8):
        raw, shift = raw[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
    if not raw.strip(_JSON_BLANK):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return LineProblem(not_utf8(err, shift))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return LineProblem(f"malformed JSON line: {err.msg} (column {err.colno})")
    except RecursionError:
        return LineProblem("malformed JSON line: nested too deeply")
    if not isinstance(value, dict):
        return LineProblem(f"expected a JSON object, got {json_type(value)}")
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            # Kept, it would fail later, when a stage writes the row back as UTF-8.
            return LineProblem(
                f"escape \\u{ord(err.object[err.start]):04x} is a lone surrogate, not a character"
            )
    return value


def json_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, dict[str, Any] | LineProblem]]:
    """(1-based line number, object or problem) for each non-blank line of a binary JSONL file.

    `lines` is a file opened in binary (or gzip-opened), which splits on b"\\n" only.
    """
    for number, raw in enumerate(lines, 1):
        parsed = parse_line(raw, first=number == 1)
        if parsed is not None:
            yield number, parsed


def _row_id(row: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the id as a string, or None; the problem with it, or None). bool is not an int here."""
    if "id" not in row:
        return None, "missing"
    value = row["id"]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value), None
    if not isinstance(value, str):
        shown = f"the number {value!r}" if isinstance(value, float) else json_type(value)
        return None, f"should be a string or an integer, not {shown}"
    return (value, None) if value.strip() else (None, "empty")


def read_corpus(
    path: str | os.PathLike[str],
    *,
    on_invalid: Literal["error", "skip"] = "error",
    count_tokens: Callable[[dict[str, Any]], int] | None = None,
    max_tokens: int | None = None,
) -> CorpusRead:
    """The corpus rows of a JSONL file, each checked by `check_rows`; `file:line` names a row."""
    with open(path, "rb") as fh:
        return check_rows(
            json_lines(fh),
            os.fspath(path),
            on_invalid=on_invalid,
            count_tokens=count_tokens,
            max_tokens=max_tokens,
        )


def check_rows(
    numbered: Iterable[tuple[int, dict[str, Any] | LineProblem]],
    where: str,
    *,
    on_invalid: Literal["error", "skip"] = "error",
    count_tokens: Callable[[dict[str, Any]], int] | None = None,
    max_tokens: int | None = None,
) -> CorpusRead:
    """The corpus rows of (line or row number, object or problem) pairs read from `where`, each
    checked; bad rows stop the read or are skipped.

    A row needs `id` (a non-empty string, or an integer, which becomes its string) and non-blank
    string `instruction` and `response`, and may have a `system` prompt (a non-blank string, or
    null); other fields are kept unchanged. A chat row (`messages`, or `prompt` and `completion`)
    is first made such a row, its id derived from its content when it has none
    (leafpipe.data.chat_rows). A row whose id an earlier
    kept row has is invalid (ids key every later table); so is one with `count_tokens(row) >
    max_tokens`, when both are given. The first problem decides the reason. With
    on_invalid="error" the first bad row raises CorpusError `"{where}:{line}: field 'f': reason"`
    (no field part for a problem with the whole line); with "skip" it is listed in `skipped`.
    No valid row at all raises CorpusError in both modes.
    """
    if on_invalid not in ("error", "skip"):
        raise ValueError(f"on_invalid must be 'error' or 'skip', got {on_invalid!r}")
    if (count_tokens is None) != (max_tokens is None):
        raise ValueError("give count_tokens and max_tokens together, or neither")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    rows: list[dict[str, Any]] = []
    skipped: list[SkippedCorpusRow] = []
    first_line: dict[str, int] = {}  # id -> line of the kept row that has it
    input_rows = 0
    for number, parsed in numbered:
        input_rows += 1
        checked = _check(parsed, first_line, count_tokens, max_tokens)
        if isinstance(checked, _Bad):
            bad = SkippedCorpusRow(where, number, *checked)
            if on_invalid == "error":
                raise CorpusError(bad.message())
            skipped.append(bad)
            continue
        first_line[checked["id"]] = number
        rows.append(checked)
    if not rows:
        if not skipped:
            raise CorpusError(f"{where}: no rows (the file is empty or blank)")
        raise CorpusError(
            f"{where}: no valid row: all {len(skipped)} skipped; the first: {skipped[0].message()}"
        )
    return CorpusRead(rows=rows, skipped=skipped, input_rows=input_rows)


class _Bad(NamedTuple):
    id: str | None
    field: str | None
    reason: str


def _check(
    parsed: dict[str, Any] | LineProblem,
    first_line: dict[str, int],
    count_tokens: Callable[[dict[str, Any]], int] | None,
    max_tokens: int | None,
) -> dict[str, Any] | _Bad:
    """The row to keep (its id a string), or (id, field, reason) for the first problem it has."""
    if isinstance(parsed, LineProblem):
        return _Bad(None, None, parsed.reason)
    derive = is_chat(parsed) and "id" not in parsed
    row_id, id_problem = (None, None) if derive else _row_id(parsed)
    if id_problem is not None:
        return _Bad(None, "id", id_problem)
    plain = plain_row(parsed)
    if isinstance(plain, ChatProblem):
        return _Bad(row_id, *plain)
    for name in _REQUIRED_TEXT:
        if (problem := text_problem(plain.get(name), name not in plain)) is not None:
            return _Bad(row_id, name, problem)
    if (problem := system_problem(plain)) is not None:
        return _Bad(row_id, "system", problem)
    row_id = derived_id(plain) if derive else row_id
    assert row_id is not None
    if row_id in first_line:
        same = " (the same system prompt, instruction and response)" if derive else ""
        return _Bad(row_id, "id", f"{row_id!r} repeats line {first_line[row_id]}{same}")
    row = {**plain, "id": row_id}
    if (
        count_tokens is not None
        and max_tokens is not None
        and (reason := too_long(row, count_tokens, max_tokens))
    ):
        return _Bad(row_id, None, reason)
    return row


def too_long(
    row: dict[str, Any], count_tokens: Callable[[dict[str, Any]], int], max_tokens: int
) -> str | None:
    """Why a row exceeds the context cutoff, or None: one wording for corpus files and built
    corpora."""
    tokens = count_tokens(row)
    return (
        f"too long: {tokens} tokens, more than max_tokens {max_tokens}"
        if tokens > max_tokens
        else None
    )


_SKIPPED_DTYPES = {"file": "str", "line": "int64", "id": "str", "field": "str", "reason": "str"}


def skipped_frame(skipped: Sequence[SkippedCorpusRow]) -> pd.DataFrame:
    """corpus/skipped.parquet: columns file, line (int64), id and field (null when none), reason.

    The dtypes are set explicitly so that an empty table has the same schema as a full one.
    """
    # Here, not at the top: benchmark_data reads lines with this module, without pandas.
    import pandas as pd

    columns = {
        name: pd.Series([getattr(row, name) for row in skipped], dtype=dtype)
        for name, dtype in _SKIPPED_DTYPES.items()
    }
    return pd.DataFrame(columns)
