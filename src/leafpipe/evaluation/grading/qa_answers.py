"""Exact match and token F1 for (multi-hop) question answering, as HotpotQA and SQuAD score them.

Both compare normalised answers (lower case, no punctuation, no articles a/an/the, single
spaces), take the best over a question's gold aliases, and see only the model's final answer:
the rest of the line after the last "answer is" (or "Answer:"), else the completion's last
non-empty line, since chat models reason before they answer.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_MARKER = re.compile(r"answer is|answer:", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def final_answer(completion: str) -> str:
    """The answer part of a completion (see the module docstring); may be empty."""
    matches = list(_MARKER.finditer(completion))
    if matches:
        rest = completion[matches[-1].end() :].strip().splitlines()
        return rest[0].strip().strip("*").strip() if rest else ""
    lines = [line.strip() for line in completion.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class QAScore:
    exact_match: bool
    f1: float
    predicted: str


def score_qa(completion: str, golds: str | Sequence[str]) -> QAScore:
    """Exact match and F1 of a completion against the best of its gold aliases."""
    aliases = [golds] if isinstance(golds, str) else list(golds)
    if not aliases:
        raise ValueError("a QA item needs at least one gold answer")
    predicted = final_answer(completion)
    em = any(normalize_answer(predicted) == normalize_answer(g) for g in aliases)
    return QAScore(em, max(_f1(predicted, g) for g in aliases), predicted)
