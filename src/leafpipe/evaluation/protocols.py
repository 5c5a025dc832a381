"""Evaluation protocols: how a benchmark's problems are asked, so that scores can be compared with
the numbers a published harness reports.

A `Protocol` fixes everything a model sees and every limit on what it writes: the system prompt,
the user turn built from the row's raw problem text (`question`), few-shot turns, the start of
the assistant's answer written for the model (`prefix`), stop strings and the token limit. A
benchmark entry picks one by name (`protocol:`, default `leafpipe`); `protocol_rows` writes its
prompt parts into the benchmark's rows, so `eval_data/<name>.jsonl` shows exactly what is asked
and generation only renders them (`templates.encode_prompt`).

The published presets reproduce their harness's prompt character for character when rendered
with the model's own chat template (tests/evaluation/test_protocols.py renders them with
Qwen2-Instruct's template and compares them with the harness's full prompt strings). Torch-free:
the workflow's planning may read a benchmark's token limit from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Turn = tuple[str, str]  # (role, content), as templates.Turn


class ProtocolError(ValueError):
    """A protocol that does not fit a benchmark: the message names the benchmark."""


@dataclass(frozen=True)
class Protocol:
    """One way of asking a benchmark's problems.

    `user`: a format string over `{question}`, the row's raw problem text; None keeps the
    instruction the benchmark's converter wrote (leafpipe's own prompts). `shots` are few-shot
    turns rendered before the problem. `prefix` opens the assistant's answer; the graded answer
    is the prefix followed by the completion (`generation.completion_record`). `stop` and
    `max_new_tokens` apply unless the benchmark entry sets its own. `tasks` are the row tasks it
    fits and `kinds`, when given, the only benchmark kinds.
    """

    name: str
    source: str
    tasks: frozenset[str]
    kinds: frozenset[str] | None = None
    system: str | None = None
    user: str | None = None
    shots: tuple[Turn, ...] = ()
    prefix: str = ""
    stop: tuple[str, ...] = ()
    max_new_tokens: int | None = None

    def fits(self, kind: str) -> bool:
        """Whether the protocol may ask a benchmark of this kind (its task is checked per row)."""
        return self.kinds is None or kind in self.kinds


# evalplus' prompt for chat models (evalplus/codegen.py run_codegen: instruction_prefix,
# response_prefix; evalplus/provider/utility.py make_raw_chat_prompt: the user turn puts the
# stripped task prompt in a bare fence, the response opens a python fence).
_EVALPLUS_INSTRUCTION = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block:"
)
_EVALPLUS_RESPONSE = (
    "Below is a Python script with a self-contained function that solves the problem and passes "
    "corresponding tests:"
)

PROTOCOLS: dict[str, Protocol] = {
    protocol.name: protocol
    for protocol in (
        Protocol(
            name="leafpipe",
            source="leafpipe's own prompts: the instruction its converter writes (converters.py)",
            tasks=frozenset({"math", "code", "qa"}),
        ),
        Protocol(
            name="qwen25-math-cot",
            source=(
                "QwenLM/Qwen2.5-Math evaluation/utils.py PROMPT_TEMPLATES['qwen25-math-cot'], "
                "evaluation/math_eval.py (stop_words, --max_tokens_per_call 2048), "
                "evaluation/sh/eval.sh (0-shot, greedy) at commit a45202b"
            ),
            tasks=frozenset({"math"}),
            kinds=frozenset({"gsm8k", "math500"}),
            system="Please reason step by step, and put your final answer within \\boxed{}.",
            user="{question}",
            stop=("</s>", "<|im_end|>", "<|endoftext|>"),
            max_new_tokens=2048,
        ),
        Protocol(
            name="evalplus",
            source=(
                "evalplus/evalplus evalplus/codegen.py (instruction and response prefixes), "
                "evalplus/provider/utility.py (make_raw_chat_prompt, EOS), "
                "evalplus/provider/base.py (max_new_tokens 768) at commit 26d6d00 (v0.3.1+44)"
            ),
            tasks=frozenset({"code"}),
            kinds=frozenset({"humaneval", "humaneval_plus"}),
            user=_EVALPLUS_INSTRUCTION + "\n```\n{question}\n```\n",
            prefix=_EVALPLUS_RESPONSE + "\n```python\n",
            stop=(
                "<|endoftext|>",
                "<|endofmask|>",
                "</s>",
                "\nif __name__",
                "\ndef main(",
                "\nprint(",
                "\n```\n",
            ),
            max_new_tokens=768,
        ),
    )
}
DEFAULT = "leafpipe"


def protocol_of(bench: Mapping[str, Any]) -> Protocol:
    """The protocol a benchmark entry names (the schema lists the names; default `leafpipe`)."""
    return PROTOCOLS[bench.get("protocol") or DEFAULT]


def stop_strings(bench: Mapping[str, Any]) -> tuple[str, ...]:
    """The entry's own `stop` when it has one (even an empty list), else its protocol's."""
    return tuple(bench["stop"]) if "stop" in bench else protocol_of(bench).stop


def max_new_tokens(evaluation: Mapping[str, Any], bench: Mapping[str, Any]) -> int:
    """The entry's own `max_new_tokens`, else its protocol's, else evaluation.max_new_tokens."""
    own = bench.get("max_new_tokens") or protocol_of(bench).max_new_tokens
    return int(own or evaluation["max_new_tokens"])


def protocol_rows(
    protocol: Protocol, rows: Sequence[Mapping[str, Any]], benchmark: str, kind: str
) -> list[dict[str, Any]]:
    """The rows with the protocol's prompt parts: `instruction` (the user turn), `system`,
    `history` (few-shot turns as [role, content] lists), `prefix`, and `protocol` (its name).

    Raises ProtocolError, naming the benchmark, when the protocol does not fit its kind or a
    row's task, or needs a row's `question` that the benchmark's converter does not write.
    """
    if not protocol.fits(kind):
        raise ProtocolError(
            f"benchmark {benchmark!r}: protocol {protocol.name!r} asks only "
            f"{', '.join(sorted(protocol.kinds or ()))} benchmarks, not kind {kind!r}"
        )
    return [_asked(protocol, row, benchmark) for row in rows]


def _asked(protocol: Protocol, row: Mapping[str, Any], benchmark: str) -> dict[str, Any]:
    if row["task"] not in protocol.tasks:
        raise ProtocolError(
            f"benchmark {benchmark!r}: protocol {protocol.name!r} asks "
            f"{', '.join(sorted(protocol.tasks))} problems; row {row['id']!r} is {row['task']!r}"
        )
    instruction = row["instruction"]
    if protocol.user is not None:
        if not row.get("question"):
            raise ProtocolError(
                f"benchmark {benchmark!r}: protocol {protocol.name!r} builds the prompt from "
                f"the problem's text, and row {row['id']!r} has no `question` field"
            )
        instruction = protocol.user.format(question=row["question"])
    return {
        **row,
        "instruction": instruction,
        "system": protocol.system,
        "history": [list(turn) for turn in protocol.shots],
        "prefix": protocol.prefix,
        "protocol": protocol.name,
    }


def prompt_parts(row: Mapping[str, Any]) -> dict[str, Any]:
    """`templates.encode_prompt`'s keywords from a row (a row without them: no system prompt,
    no few-shot turns, no prefix, as the `leafpipe` protocol)."""
    return {
        "system": row.get("system"),
        "history": tuple((role, content) for role, content in row.get("history") or ()),
        "prefix": row.get("prefix") or "",
    }
