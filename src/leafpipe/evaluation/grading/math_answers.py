"""Grade free-text math completions against LaTeX gold answers, with math-verify and a time bound.

Exact string match undercounts: `0.5` is `\\frac{1}{2}`, `[-2,7]` is `[-2, 7]`, `1,000` is `1000`.
math-verify (sympy underneath) decides such equivalences, but sympy can run for minutes on an
innocent-looking answer (`10^{10^{8}}` against `5` evaluates a hundred-million-digit integer),
and math-verify's own time limits use SIGALRM, which only works on a process's main thread and
reports a timeout as "not equal" rather than as a timeout. So every pair is graded in a worker
process, extraction included (a completion can be long and odd), and the caller kills the
worker when the pair's time is up; the pair is reported as "timeout", a fresh worker takes its
place and the other pairs keep their verdicts.

Which answer is graded is decided here, not by math-verify: the last of `\\boxed{...}` (also
`\\fbox{...}` and `\\boxed X`), `#### X`, "the answer is X" / "final answer is X" and an
"Answer: X" line, since models revise answers and math-verify's own search prefers some markers
over later ones. Both sides are then read as a careful grader reads them (`answer_forms`: units,
currency, e-notation...) and each parsed as `\\boxed{...}`, so that math-verify reads exactly that
text as one LaTeX expression (a bare gold such as `\\frac{14}{3}` has no `$...$` around it, and
math-verify's plain-number fallback would pick single numbers out of it).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from typing import Literal

from math_verify import LatexExtractionConfig, parse, verify

from leafpipe.evaluation.grading.answer_forms import comparable, percent_number
from leafpipe.evaluation.grading.answer_spans import cut_reason, listed_boxes
from leafpipe.evaluation.grading.boxed_scan import find_boxes

Marker = Literal["boxed", "hashes", "answer_is", "answer_line"]
DecidedBy = Literal["math_verify", "string", "no_answer", "timeout"]
# One pair to grade: (its index in the call, completion, gold).
Job = tuple[int, str, str]
# What a worker answers for one pair: (correct, decided_by, detail).
Result = tuple[bool, DecidedBy, str]

# What a worker sends once it has imported and warmed up sympy, so that start-up is never
# charged to a pair's time.
_READY = "ready"
# A worker that has not said it is ready by then is broken (it cannot import, say): raise.
_STARTUP_LIMIT_S = 120.0
# Verdict details show parsed expressions; a huge one is cut, not printed in full.
_DETAIL_CHARS = 200

# Markers whose answer runs to the end of the line. Only the last of each kind is read, and the
# patterns do not read the line themselves: a line of a thousand markers would be read a
# thousand times, quadratic in its length.
_LINE_MARKERS: tuple[tuple[Marker, re.Pattern[str]], ...] = (
    ("hashes", re.compile("####")),
    ("answer_is", re.compile(r"\b(?:the|final) answer is\b", re.IGNORECASE)),
    # A line that starts with "Answer:" or "Final answer:", plain or in Markdown ("**Answer:**",
    # "## Final Answer:", "- Answer:").
    (
        "answer_line",
        re.compile(r"^[ \t>#*_-]*(?:final[ \t]+)?answer[ \t*_]*:", re.IGNORECASE | re.MULTILINE),
    ),
)
# Math delimiters around an "answer is" / "####" answer, the closing one for each opening.
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# The end of a sentence: a period followed by a space or the end ("3.5." ends after "3.5").
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
# A space between digit groups, as in `1\,000` or `1 234` (also `\!`, `\ `, `~`): math-verify
# reads `1\,000` as the product 1·000 = 0 and `1 234` as 235, so they would equal 0 and 235.
_DIGIT_GROUP_SPACE = re.compile(r"(?<=\d)(?:\\[,! ]|~|\s+)(?=\d{3}(?!\d))")
# One unit word after a number at the end, as in `5 \text{ cm}` or `3 \text{ m}^2` (percent words
# excepted: math-verify reads those as %). math-verify itself drops everything from the FIRST
# `\text{` to the end of an answer that ends in one, so `42 \text{ cm}, 43 \text{ cm}` would
# equal 42; with the last unit gone first, its rule has nothing left to drop.
_TRAILING_UNIT = re.compile(
    r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\s*\{(?!\s*(?:percent|percentage|pct)\s*\})"
    r"\s*[A-Za-z][A-Za-z .]*\}(?:\s*\^\s*(?:\{\s*)?\d(?:\s*\})?)?\s*$"
)
# In this pattern and in `_DROPPED`, an optional piece never stands alone between two runs of
# spaces (as in `\s*\{?\s*`): every split of a long run between them would be tried, quadratic
# in its length.

# The string fallback: formatting wrappers are unwrapped, spacing and decoration dropped.
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{")
_DROPPED = re.compile(
    r"\\(?:left|right)(?![A-Za-z])|\\[!,;:]|\\ |\^\s*(?:\{\s*)?\\circ\s*\}?|\\?%|\$|\s"
)


@dataclass(frozen=True)
class Extracted:
    """The final answer of a completion and the marker that gave it (None, None without one)."""

    answer: str | None
    marker: Marker | None


@dataclass(frozen=True)
class MathVerdict:
    """One graded pair: whether it is correct, what was graded, and which path decided it.

    `decided_by`: "math_verify" (both sides parsed and compared), "string" (one side did not
    parse, so normalised strings were compared), "no_answer" (no marker, or an empty one),
    "timeout" (no verdict within the time limit, or the worker died; counted as incorrect).
    """

    correct: bool
    predicted: str | None
    marker: Marker | None
    decided_by: DecidedBy
    detail: str


def _clean(answer: str) -> str:
    """An answer as written after "answer is", "Answer:" or "####": delimiters, bold and final
    period off.

    Math delimiters are honoured ("$3.5$. Next, ..." gives "3.5"); without them the answer ends
    at the first sentence end, which a decimal point ("3.5") is not, or before a reason given in
    the same sentence ("18 because ..." gives "18").
    """
    text = answer.replace("**", "").strip().lstrip(":").strip()
    for opening, closing in _DELIMITERS:
        if text.startswith(opening):
            end = text.find(closing, len(opening))
            while end > 0 and text[end - 1] == "\\":  # an escaped `\$` is a dollar, not the end
                end = text.find(closing, end + 1)
            text = text[len(opening) : end] if end >= 0 else text[len(opening) :]
            break
    else:
        end_match = _SENTENCE_END.search(text)
        if end_match:
            text = text[: end_match.start()]
        text = cut_reason(text)
    return text.strip().rstrip(".").strip("$").strip()


def extract_final_answer(text: str) -> Extracted:
    """The last answer marker in `text` and its answer; an empty marker gives answer None.

    Only the last marker counts, as in `numeric_answers.extract_answer`: a model that boxes 5 and
    then writes "The answer is 6." answered 6. A box nested in a box is the later marker; boxes
    listed side by side ("x = \\boxed{3} or x = \\boxed{5}") are one answer, "3, 5".
    """
    candidates: list[tuple[int, Marker, str]] = []
    boxes = find_boxes(text)
    if boxes:
        candidates.append((boxes[-1].start, "boxed", listed_boxes(text, boxes)))
    for marker, pattern in _LINE_MARKERS:
        last = None
        for last in pattern.finditer(text):
            pass
        if last is not None:
            end_of_line = text.find("\n", last.end())
            rest = text[last.end() : end_of_line if end_of_line >= 0 else len(text)]
            candidates.append((last.start(), marker, _clean(rest)))
    if not candidates:
        return Extracted(answer=None, marker=None)
    _, marker, answer = max(candidates, key=lambda candidate: candidate[0])
    answer = answer.strip().rstrip(".").strip("$").strip()
    return Extracted(answer=answer or None, marker=marker)


def _unwrapped(text: str) -> str:
    """`text` without its formatting wrappers (`\\text{...}` and kin, nested or not) and their
    closing braces, in one pass over a stack of the open braces: unwrapping innermost groups by
    repeated substitution took time quadratic in the nesting depth. An escaped brace (`\\{`) is
    kept as it is and opens no group."""
    out: list[str] = []
    opened_by_wrapper: list[bool] = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            wrapper = _TEXT_WRAPPER.match(text, i)
            if wrapper:
                opened_by_wrapper.append(True)
                i = wrapper.end()
                continue
            out.append(text[i : i + 2])
            i += 2
            continue
        if text[i] == "{":
            opened_by_wrapper.append(False)
        elif text[i] == "}" and opened_by_wrapper and opened_by_wrapper.pop():
            i += 1
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def normalize_answer(text: str) -> str:
    """The string-fallback form of an answer: formatting gone, content (and case) kept.

    `\\text{...}`-style wrappers are unwrapped and `\\dfrac`/`\\tfrac` read as `\\frac`; dropped:
    `$`, whitespace, `\\left`/`\\right`, the spacing commands `\\!` `\\,` `\\;` `\\:` `\\ `,
    degree marks `^\\circ`, percent signs, a trailing period. Unit words stay: "5cm" is not "5".
    """
    text = _unwrapped(text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    return _DROPPED.sub("", text).rstrip(".")


def _parse(answer: str) -> list[object]:
    """math-verify's reading of one answer as a single LaTeX expression; [] if it cannot."""
    config = LatexExtractionConfig(boxed_match_priority=0)
    boxed = "\\boxed{" + _TRAILING_UNIT.sub("", _DIGIT_GROUP_SPACE.sub("", answer)) + "}"
    return parse(
        boxed, extraction_config=[config], fallback_mode="no_fallback", parsing_timeout=None
    )


def _show(expression: object) -> str:
    """A parsed expression for a verdict's detail, cut short; sympy can fail to print some."""
    try:
        shown = str(expression)
    except Exception as error:  # e.g. an integer past Python's int-to-str digit limit
        shown = f"<unprintable: {type(error).__name__}>"
    return shown if len(shown) <= _DETAIL_CHARS else shown[:_DETAIL_CHARS] + "..."


def _compare(predicted: str, gold: str) -> Result:
    """Correctness, deciding path and detail of one extracted answer against its gold.

    Runs in a worker process only. math-verify's own timeouts are off (`None`): the caller
    bounds the time by killing this process, and math-verify would report a timeout as False.
    Both sides are first read in the forms a careful grader sees (`answer_forms.comparable`:
    units, currency and degree signs off, e-notation and choice letters read); the detail says so
    when that changed the answer.
    """
    predicted_form, gold_form = comparable(predicted, gold)
    read_as = (
        "" if predicted_form == predicted else f" (read as {predicted_form[:_DETAIL_CHARS]!r})"
    )
    gold_parsed, predicted_parsed = _parse(gold_form), _parse(predicted_form)
    number = percent_number(predicted_form, gold_form)
    if predicted_parsed and number is not None:  # either reading of "12.5%" may match
        predicted_parsed += _parse(number)
    if gold_parsed and predicted_parsed:
        shown = f"gold {_show(gold_parsed[0])} vs predicted {_show(predicted_parsed[0])}{read_as}"
        try:
            equal = verify(gold_parsed, predicted_parsed, timeout_seconds=None, raise_on_error=True)
        except Exception as error:  # sympy failing on an odd pair is a "no", but say why
            return False, "math_verify", f"{shown}: comparison failed ({type(error).__name__})"
        return equal, "math_verify", shown
    unparsed = " and ".join(
        side
        for side, parsed in (("gold", gold_parsed), ("predicted", predicted_parsed))
        if not parsed
    )
    gold_norm, predicted_norm = normalize_answer(gold_form), normalize_answer(predicted_form)
    equal = bool(gold_norm) and gold_norm == predicted_norm
    return (
        equal,
        "string",
        f"math-verify could not parse {unparsed}: {gold_norm!r} vs {predicted_norm!r}",
    )


def _judge(found: Extracted, gold: str) -> Result:
    """Correctness, deciding path and detail of a completion's extracted answer against its gold."""
    if found.answer is None:
        detail = "no answer marker" if found.marker is None else f"empty {found.marker} marker"
        return False, "no_answer", detail
    return _compare(found.answer, _gold_answer(gold))


def _serve(conn: Connection) -> None:
    """Worker loop: warm up, say ready, then grade (completion, gold) pairs until EOF.

    Extraction runs here too, on the pair's clock: it is linear in the completion's length, but
    a completion can be long. Its result is sent on its own, first, so that a pair whose
    comparison times out still shows what was compared.
    """
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout is disabled" warning
    # sympy imports much on first use (numbers, then sets for intervals): not on a pair's clock.
    _compare("0.5", "\\frac{1}{2}")
    _compare("(1, 2]", "(1, 2]")
    conn.send(_READY)
    while True:
        try:
            completion, gold = conn.recv()
        except EOFError:
            return
        found = extract_final_answer(completion)
        conn.send(found)
        conn.send(_judge(found, gold))


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """A spawned worker re-runs the parent's `__main__` script when it has one; under Snakemake
    that is the rule's script, which fails outside Snakemake. The workers need only this module,
    so the script's path is hidden while they start."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) if getattr(main, "__spec__", None) is None else None
    if path is None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


class _Worker:
    """One spawned worker process, the pipe to it, and the job it is on (with its deadline)."""

    def __init__(self, context: BaseContext) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), daemon=True)
        with _main_script_hidden():
            self.process.start()
        child.close()
        self.ready = False
        self.job: Job | None = None
        self.found: Extracted | None = None  # the job's answer, once extracted
        self.deadline = 0.0

    def assign(self, job: Job, timeout_s: float) -> None:
        try:
            self.conn.send(job[1:])
        except OSError:  # it died while idle; `_run` then reads the closed pipe as a death
            pass
        self.job = job
        self.found = None
        self.deadline = time.monotonic() + timeout_s

    def receive(self) -> tuple[int, MathVerdict] | None:
        """Read one message: "ready", the job's extraction, or its result, which ends the job
        (then its index and verdict are returned).

        Raises EOFError or OSError if the worker died.
        """
        message = self.conn.recv()
        if message == _READY:
            self.ready = True
        elif isinstance(message, Extracted):
            self.found = message
        else:
            return self.finish(message)
        return None

    def finish(self, result: Result) -> tuple[int, MathVerdict]:
        """End the job with `result`: its index and its verdict."""
        assert self.job is not None, "a result for a worker without a job"
        found = self.found or Extracted(answer=None, marker=None)
        index, self.job = self.job[0], None
        return index, MathVerdict(result[0], found.answer, found.marker, result[1], result[2])

    def stop(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


def _run(jobs: Sequence[Job], timeout_s: float, workers: int) -> dict[int, MathVerdict]:
    """Each job's verdict by index, at most `timeout_s` per job (extraction and comparison).

    "spawn" workers: a fork of a parent that holds threads (torch, a tokenizer) can deadlock.
    """
    context = multiprocessing.get_context("spawn")
    queue = deque(jobs)
    results: dict[int, MathVerdict] = {}
    pool = [_Worker(context) for _ in range(min(workers, len(jobs)))]
    try:
        while len(results) < len(jobs):
            for worker in pool:
                if worker.ready and worker.job is None and queue:
                    worker.assign(queue.popleft(), timeout_s)
            deadlines = [worker.deadline for worker in pool if worker.job is not None]
            limit = max(0.0, min(deadlines) - time.monotonic()) if deadlines else _STARTUP_LIMIT_S
            readable = wait([worker.conn for worker in pool], timeout=limit)
            if not readable and not deadlines:
                raise RuntimeError(f"no grading worker started within {_STARTUP_LIMIT_S:.0f} s")
            for slot, worker in enumerate(pool):
                if worker.conn in readable:
                    try:
                        finished = worker.receive()
                    except (EOFError, OSError):  # died: a closed pipe, or reset if a job was unread
                        worker.stop()
                        if not worker.ready:
                            raise RuntimeError(
                                "a grading worker exited during start-up "
                                f"(exit code {worker.process.exitcode})"
                            ) from None
                        failure = f"worker died (exit code {worker.process.exitcode})"
                    else:
                        if finished is not None:
                            results.update([finished])
                        continue
                elif worker.job is not None and time.monotonic() >= worker.deadline:
                    worker.stop()
                    unfinished = "no answer extracted" if worker.found is None else "no verdict"
                    failure = f"{unfinished} within {timeout_s:g} s; worker killed"
                else:
                    continue
                if worker.job is not None:  # an idle worker that died loses no pair
                    results.update([worker.finish((False, "timeout", failure))])
                pool[slot] = _Worker(context)
    finally:
        for worker in pool:
            worker.stop()
    return results


def _cpus() -> int:
    """CPUs this process may use (its affinity, as a scheduler such as Slurm sets it), not the
    machine's count, so that a job does not start more workers than it was given cores."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _gold_answer(gold: str) -> str:
    """The gold to compare with: its marked answer if it has one, since the world's references
    read "The answer is 7."; otherwise the gold itself (MATH-500's are bare LaTeX)."""
    return extract_final_answer(gold).answer or gold.strip()


def grade_math(
    pairs: Sequence[tuple[str, str]], *, timeout_s: float = 5.0, workers: int | None = None
) -> list[MathVerdict]:
    """Grade (completion, gold answer) pairs; verdicts in the order of `pairs`.

    A gold may be bare (`\\frac{14}{3}`) or marked ("The answer is 7."). Each pair is graded,
    extraction included, in one of `workers` processes (default: one per CPU this process may
    use) within `timeout_s` seconds of reaching it, or it is a "timeout" and counts as
    incorrect; a completion without an answer marker is "no_answer".
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    jobs = [(index, completion, gold) for index, (completion, gold) in enumerate(pairs)]
    results = _run(jobs, timeout_s, workers or _cpus()) if jobs else {}
    return [results[index] for index in range(len(jobs))]
