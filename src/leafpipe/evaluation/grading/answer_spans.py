"""Where a marked answer ends: a reason after it in the same sentence, or more boxes beside it.

Models write "The answer is 18 because she sells 9 eggs", and a careful grader reads 18, not the
sentence. They box each solution of an equation ("x = \\boxed{3} or x = \\boxed{5}"), and a careful
grader reads the list 3, 5: right for a gold of "3, 5", and a hedge (wrong) for a gold of 3. A box
that follows another after anything else ("\\boxed{4}. Wait, no: \\boxed{6}") is a revision, and
only the last box counts.

Linear in the text's length: one scan for reason words, one look at the gap before each box.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from leafpipe.evaluation.grading.boxed_scan import Box

# A word that starts the reason or a remark after an answer given in prose, after a space, a
# comma or an opening bracket: "18 because ...", "7, which is odd", "7 (since 3 + 4 = 7)".
_REASON = re.compile(
    r"(?<=[\s,(])(?:because|since|as|which|so|given|due to|hence|thus|therefore|where|when|if|"
    r"for|with)\b",
    re.IGNORECASE,
)
# What may stand between two boxes of one list: spaces, commas, `$`, "or"/"and" (also in
# `\text{}`), `\quad`, and the variable of the next box ("x =", "x_2 ="). Longer gaps are prose.
_LIST_GAP_PIECE = re.compile(
    r"\\q?quad(?![A-Za-z])|\\text\s*\{\s*(?:or|and)\s*\}|\b(?:or|and)\b"
    r"|\b[A-Za-z](?:_\{?\w{1,3}\}?)?\s*=|[\s$,;]"
)
_LIST_GAP_CHARS = 40


def cut_reason(answer: str) -> str:
    """`answer` up to the first reason word after it, without the comma or bracket before it."""
    reason = _REASON.search(answer)
    return answer if reason is None else answer[: reason.start()].rstrip(" \t,(")


def _box_end(text: str, box: Box) -> int:
    """Where `box` ends in `text`: after its closing brace, or after its bare token."""
    return box.content_end + 1 if text.startswith("}", box.content_end) else box.content_end


def _joins_list(gap: str) -> bool:
    """Whether `gap`, the text between two boxes, only separates items of one list."""
    return len(gap) <= _LIST_GAP_CHARS and _LIST_GAP_PIECE.sub("", gap) == ""


def listed_boxes(text: str, boxes: Sequence[Box]) -> str:
    """The answer of the last box in `text`, joined (", ") with the boxes listed just before it.

    `boxes` are those of `text`, in order of their start. A box nested in the previous one ends
    the list (the inner box is the answer); a box repeating an earlier item of the list adds
    nothing; an empty last box (cut off) gives "", no answer.
    """
    last = boxes[-1]
    if not last.content(text):  # cut off before its closing brace: the completion has no answer
        return ""
    items = [last.content(text)]
    seen = set(items)
    later = last
    for box in reversed(boxes[:-1]):
        end = _box_end(text, box)
        if end > later.start or not _joins_list(text[end : later.start]):
            break
        content = box.content(text)
        if not content:
            break
        if content not in seen:
            items.append(content)
            seen.add(content)
        later = box
    return ", ".join(reversed(items))
