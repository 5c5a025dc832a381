"""Grade free-text math completions against LaTeX gold answers, with math-verify and a time bound.

Exact string match undercounts: `0.5` is `\\frac{1}{2}`, `[-2,7]` is `[-2, 7]`, `1,000` is `1000`.
math-verify (sympy underneath) decides such equivalences, but sympy can run for minutes on an
innocent-looking answer (`10^{10^{8}}` against `5` evaluates a hundred-million-digit integer),
and math-verify's own time limits use SIGALRM, which only works on a process's main thread and
reports a timeout as "not equal" rather than as a timeout. So every comparison runs in a worker
process that the caller kills when the pair's time is up; the pair is reported as "timeout",
a fresh worker takes its place and the other pairs keep their verdicts.

Which answer is graded is decided here, not by math-verify: the last of `\\boxed{...}` (also
`\\fbox{...}` and `\\boxed X`), `#### X` and "the answer is X" / "final answer is X", since models
revise answers and math-verify's own search prefers some markers over later ones. The extracted
answer and the gold are each parsed as `\\boxed{...}`, so that math-verify reads exactly that
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

Marker = Literal["boxed", "hashes", "answer_is"]
DecidedBy = Literal["math_verify", "string", "no_answer", "timeout"]

# What a worker sends once it has imported and warmed up sympy, so that start-up is never
# charged to a pair's time.
_READY = "ready"
# A worker that has not said it is ready by then is broken (it cannot import, say): raise.
_STARTUP_LIMIT_S = 120.0
# Verdict details show parsed expressions; a huge one is cut, not printed in full.
_DETAIL_CHARS = 200

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")
# The answer runs to the end of the line, read by lookahead so that a later marker on the same
# line is still found as a marker of its own.
_HASHES = re.compile(r"####(?=[ \t]*(?P<rest>[^\n]*))")
_ANSWER_IS = re.compile(r"\b(?:the|final) answer is\b(?=(?P<rest>[^\n]*))", re.IGNORECASE)
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
    r"\s*[A-Za-z][A-Za-z .]*\}\s*(?:\^\s*\{?\s*\d\s*\}?)?\s*$"
)

# The string fallback: formatting wrappers are unwrapped, spacing and decoration dropped.
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_DROPPED = re.compile(
    r"\\(?:left|right)(?![A-Za-z])|\\[!,;:]|\\ |\^\s*\{?\s*\\circ\s*\}?|\\?%|\$|\s"
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


def _close_brace(text: str, start: int) -> int | None:
    """Index of the `}` closing the `{` at `start`, skipping escaped `\\{` `\\}`; None if open."""
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _boxed(text: str, match: re.Match[str]) -> str:
    """The argument of the box opened by `match`: braced (nesting allowed) or one bare token.

    A box cut off before its closing brace (a truncated completion) has no answer: "".
    """
    after = match.end()
    if text.startswith("{", after):
        end = _close_brace(text, after)
        return "" if end is None else text[after + 1 : end]
    bare = re.match(r"[^\s$]+", text[after:])
    return bare.group(0) if bare else ""


def _clean(answer: str) -> str:
    """An answer as written after "answer is" or "####": delimiters, bold and final period off.

    Math delimiters are honoured ("$3.5$. Next, ..." gives "3.5"); without them the answer ends
    at the first sentence end, which a decimal point ("3.5") is not.
    """
    text = answer.replace("**", "").strip().lstrip(":").strip()
    for opening, closing in _DELIMITERS:
        if text.startswith(opening):
            end = text.find(closing, len(opening))
            text = text[len(opening) : end] if end >= 0 else text[len(opening) :]
            break
    else:
        end_match = _SENTENCE_END.search(text)
        if end_match:
            text = text[: end_match.start()]
    return text.strip().rstrip(".").strip("$").strip()


def extract_final_answer(text: str) -> Extracted:
    """The last answer marker in `text` and its answer; an empty marker gives answer None.

    Only the last marker counts, as in `numeric_answers.extract_answer`: a model that boxes 5 and
    then writes "The answer is 6." answered 6. A box nested in a box is the later marker.
    """
    candidates: list[tuple[int, Marker, str]] = [
        (m.start(), "boxed", _boxed(text, m)) for m in _BOX_OPEN.finditer(text)
    ]
    candidates += [(m.start(), "hashes", _clean(m["rest"])) for m in _HASHES.finditer(text)]
    candidates += [(m.start(), "answer_is", _clean(m["rest"])) for m in _ANSWER_IS.finditer(text)]
    if not candidates:
        return Extracted(answer=None, marker=None)
    _, marker, answer = max(candidates, key=lambda candidate: candidate[0])
    answer = answer.strip().rstrip(".").strip("$").strip()
    return Extracted(answer=answer or None, marker=marker)


def normalize_answer(text: str) -> str:
    """The string-fallback form of an answer: formatting gone, content (and case) kept.

    `\\text{...}`-style wrappers are unwrapped and `\\dfrac`/`\\tfrac` read as `\\frac`; dropped:
    `$`, whitespace, `\\left`/`\\right`, the spacing commands `\\!` `\\,` `\\;` `\\:` `\\ `,
    degree marks `^\\circ`, percent signs, a trailing period. Unit words stay: "5cm" is not "5".
    """
    previous = None
    while previous != text:  # unwrap nested wrappers from the inside out
        previous, text = text, _TEXT_WRAPPER.sub(r"\1", text)
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


def _compare(predicted: str, gold: str) -> tuple[bool, DecidedBy, str]:
    """Correctness, deciding path and detail of one extracted answer against its gold.

    Runs in a worker process only. math-verify's own timeouts are off (`None`): the caller
    bounds the time by killing this process, and math-verify would report a timeout as False.
    """
    gold_parsed, predicted_parsed = _parse(gold), _parse(predicted)
    if gold_parsed and predicted_parsed:
        shown = f"gold {_show(gold_parsed[0])} vs predicted {_show(predicted_parsed[0])}"
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
    gold_norm, predicted_norm = normalize_answer(gold), normalize_answer(predicted)
    equal = bool(gold_norm) and gold_norm == predicted_norm
    return (
        equal,
        "string",
        f"math-verify could not parse {unparsed}: {gold_norm!r} vs {predicted_norm!r}",
    )


def _serve(conn: Connection) -> None:
    """Worker loop: warm up, say ready, then answer (index, predicted, gold) jobs until EOF."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout is disabled" warning
    # sympy imports much on first use (numbers, then sets for intervals): not on a pair's clock.
    _compare("0.5", "\\frac{1}{2}")
    _compare("(1, 2]", "(1, 2]")
    conn.send(_READY)
    while True:
        try:
            index, predicted, gold = conn.recv()
        except EOFError:
            return
        conn.send((index, _compare(predicted, gold)))


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
        self.job: tuple[int, str, str] | None = None
        self.deadline = 0.0

    def assign(self, job: tuple[int, str, str], timeout_s: float) -> None:
        try:
            self.conn.send(job)
        except OSError:  # it died while idle; `_run` then reads the closed pipe as a death
            pass
        self.job = job
        self.deadline = time.monotonic() + timeout_s

    def stop(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


def _run(
    jobs: Sequence[tuple[int, str, str]], timeout_s: float, workers: int
) -> dict[int, tuple[bool, DecidedBy, str]]:
    """Each job's (correct, decided_by, detail) by index, at most `timeout_s` per job.

    "spawn" workers: a fork of a parent that holds threads (torch, a tokenizer) can deadlock.
    """
    context = multiprocessing.get_context("spawn")
    queue = deque(jobs)
    results: dict[int, tuple[bool, DecidedBy, str]] = {}
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
                        message = worker.conn.recv()
                    except (EOFError, OSError):  # died: a closed pipe, or reset if a job was unread
                        worker.stop()
                        if not worker.ready:
                            raise RuntimeError(
                                "a grading worker exited during start-up "
                                f"(exit code {worker.process.exitcode})"
                            ) from None
                        failure = f"worker died (exit code {worker.process.exitcode})"
                    else:
                        if message == _READY:
                            worker.ready = True
                        else:
                            index, verdict = message
                            results[index] = verdict
                            worker.job = None
                        continue
                elif worker.job is not None and time.monotonic() >= worker.deadline:
                    worker.stop()
                    failure = f"no verdict within {timeout_s:g} s; worker killed"
                else:
                    continue
                if worker.job is not None:  # an idle worker that died loses no pair
                    results[worker.job[0]] = (False, "timeout", failure)
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

    A gold may be bare (`\\frac{14}{3}`) or marked ("The answer is 7."). Completions without
    an answer marker are "no_answer" at once; the others are compared in `workers` processes
    (default: one per CPU this process may use), each pair within `timeout_s` seconds of
    reaching its worker, or it is a "timeout" and counts as incorrect.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    extracted = [extract_final_answer(completion) for completion, _ in pairs]
    jobs = [
        (index, found.answer, _gold_answer(gold))
        for index, (found, (_, gold)) in enumerate(zip(extracted, pairs))
        if found.answer is not None
    ]
    results = _run(jobs, timeout_s, workers or _cpus()) if jobs else {}
    verdicts = []
    for index, found in enumerate(extracted):
        if found.answer is None:
            detail = "no answer marker" if found.marker is None else f"empty {found.marker} marker"
            verdicts.append(MathVerdict(False, None, found.marker, "no_answer", detail))
        else:
            correct, decided_by, detail = results[index]
            verdicts.append(MathVerdict(correct, found.answer, found.marker, decided_by, detail))
    return verdicts
