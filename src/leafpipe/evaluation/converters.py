"""Converters from each benchmark's own records to the normalised rows (docs/benchmarks.md).

One function per record layout: it either returns a row or raises `UnusableRow` with the reason
the row is skipped. The bigger converters (LeetCode, LiveCodeBench) live in their own modules;
`kinds.KINDS` names the converter of each benchmark kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from leafpipe.evaluation.rows import BenchmarkRow, CodeSpec, InputRow, UnusableRow, code_row

MATH_FORMAT = "Please reason step by step, and put your final answer within \\boxed{}."
QA_FORMAT = 'Give a short answer: end your response with "The answer is <answer>."'


# --- answer fields --------------------------------------------------------------------------


def _scalar_answer(row: InputRow, field: str) -> str:
    """A gold answer written as a string or a number; a null or empty one skips the row."""
    value = row.get(field, (str, int, float))
    text = "" if value is None else str(value).strip()
    if not text:
        raise UnusableRow(f'no answer (field "{field}" is empty)')
    return text


def _unboxed(answer: str) -> str:
    """An answer without the `$...$` that OlympiadBench puts around final answers."""
    return answer[1:-1].strip() if len(answer) > 1 and answer[0] == answer[-1] == "$" else answer


# --- instructions ---------------------------------------------------------------------------


def _math(row_id: str, question: str, answer: str) -> BenchmarkRow:
    return {
        "id": row_id,
        "task": "math",
        "instruction": f"{question}\n\n{MATH_FORMAT}",
        "answer": answer,
        "code": None,
        "question": question,
    }


# --- math -----------------------------------------------------------------------------------


def gsm8k_row(row: InputRow) -> BenchmarkRow:
    question, solution = row.text("question"), row.text("answer")
    if not question:
        raise UnusableRow('no question (field "question" is empty)')
    if "####" not in solution:
        raise UnusableRow('no final answer: field "answer" has no "#### <number>" line')
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise UnusableRow('no final answer after "####"')
    return _math(row.row_id(["id"], "gsm8k"), question, final)


def math500_row(row: InputRow) -> BenchmarkRow:
    # MATH-500 on the hub calls the question "problem"; MMATH calls it "question".
    field = "problem" if "problem" in row.data or "question" not in row.data else "question"
    question = row.text(field)
    if not question:
        raise UnusableRow(f'no question (field "{field}" is empty)')
    # Index-based ids, so that the shipped subset and the hub file give the same ids
    # (MMATH's data_source_id is the problem's index in MATH-500).
    source_index = row.get("data_source_id", int, required=False)
    row_id = f"math500-{row.index if source_index is None else source_index}"
    return _math(row_id, question, _scalar_answer(row, "answer"))


def olympiadbench_row(row: InputRow) -> BenchmarkRow:
    question = row.text("question")
    if not question:
        raise UnusableRow('no question (field "question" is empty)')
    if "<image_" in question or any(
        row.get(f"image_{k}", object, required=False) for k in range(1, 10)
    ):
        raise UnusableRow("needs images (text-only models cannot see them)")
    final = row.get("final_answer", (list, str))
    answers = [final] if isinstance(final, str) else list(final or [])
    answers = [_unboxed(str(a).strip()) for a in answers if a is not None and str(a).strip()]
    if not answers:
        raise UnusableRow('no final answer (field "final_answer" is empty: a proof problem?)')
    context = row.text("context", required=False)
    full = f"{context}\n\n{question}" if context else question
    return _math(row.row_id(["id"], "olympiadbench"), full, ", ".join(answers))


# --- code -----------------------------------------------------------------------------------


def humaneval_row(row: InputRow) -> BenchmarkRow:
    task_id = row.text("task_id")
    prompt, entry_point = row.get("prompt"), row.text("entry_point")
    test = row.get("test")
    if not task_id:
        raise UnusableRow('no task id (field "task_id" is empty)')
    if not (prompt or "").strip() or not entry_point:
        raise UnusableRow('no prompt or entry point (field "prompt" or "entry_point" is empty)')
    if not (test or "").strip():
        raise UnusableRow('no tests (field "test" is empty)')
    instruction = (
        "Complete the following Python function. Answer with a single python code block holding "
        f"the complete function, with the imports it needs.\n\n```python\n{prompt.rstrip()}\n```"
    )
    spec: CodeSpec = {
        "kind": "humaneval",
        "prompt": prompt,
        "entry_point": entry_point,
        "test": test,
        "cases": [],
    }
    return code_row(task_id, instruction, spec, question=prompt.strip())


# --- multi-hop QA ---------------------------------------------------------------------------


def _passages(row: InputRow) -> list[tuple[str, str]]:
    """(title, text) passages: HotpotQA/2Wiki `context` ([title, sentences] pairs, or the hub's
    {"title": [...], "sentences": [[...]]}) or MuSiQue `paragraphs` ({title, paragraph_text})."""
    context = row.get("context", (list, dict), required=False)
    paragraphs = row.get("paragraphs", list, required=False)
    if isinstance(context, dict):
        titles, sentences = context.get("title"), context.get("sentences")
        if (
            not isinstance(titles, list)
            or not isinstance(sentences, list)
            or len(titles) != len(sentences)
        ):
            raise row.error("context", 'should hold equally long "title" and "sentences" lists')
        context = [list(pair) for pair in zip(titles, sentences)]
    found = []
    for number, item in enumerate(context or [], 1):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], (list, str))):
            raise row.error("context", f"item {number} should be [title, sentences]")
        text = item[1] if isinstance(item[1], str) else " ".join(str(s).strip() for s in item[1])
        found.append((str(item[0]), text.strip()))
    for number, item in enumerate(paragraphs or [], 1):
        if not isinstance(item, dict) or "paragraph_text" not in item:
            raise row.error("paragraphs", f"item {number} should be an object with paragraph_text")
        found.append((str(item.get("title", "")), str(item["paragraph_text"]).strip()))
    return found


def qa_converter(prefix: str, id_fields: Sequence[str]) -> Callable[[InputRow], BenchmarkRow]:
    def convert(row: InputRow) -> BenchmarkRow:
        question = row.text("question")
        if not question:
            raise UnusableRow('no question (field "question" is empty)')
        if row.get("answerable", bool, required=False) is False:
            raise UnusableRow("unanswerable (answerable is false)")
        answer = row.get("answer", (str, int, float, list))
        aliases = row.get("answer_aliases", list, required=False) or []
        golds = (answer if isinstance(answer, list) else [answer]) + aliases
        golds = list(
            dict.fromkeys(str(g).strip() for g in golds if g is not None and str(g).strip())
        )
        if not golds:
            raise UnusableRow('no answer (field "answer" is empty)')
        passages = _passages(row)
        listed = "".join(
            f"Passage {k} ({title}): {text}\n\n" for k, (title, text) in enumerate(passages, 1)
        )
        lead = "Answer the question using the passages below.\n\n" if passages else ""
        return {
            "id": row.row_id(id_fields, prefix),
            "task": "qa",
            "instruction": f"{lead}{listed}Question: {question}\n\n{QA_FORMAT}",
            "answer": golds,
            "code": None,
        }

    return convert


def project_jsonl_row(row: InputRow) -> BenchmarkRow:
    """The project's own rows (docs/data-schemas.md); their instruction already sets the format."""
    row_id, instruction = row.text("id"), row.text("instruction")
    if not row_id:
        raise row.error("id", "is empty: ids identify rows in every later file")
    if not instruction:
        raise UnusableRow('no instruction (field "instruction" is empty)')
    answer = _scalar_answer(row, "answer")
    return {
        "id": row_id,
        "task": "math",
        "instruction": instruction,
        "answer": answer,
        "code": None,
        "question": instruction,
    }
