"""Kinds of instruction token, so that detection and attention can be judged by kind.

A confounder detector that flags every number looks good on average and is useless: on the
world, the planted distractor's number must be told apart from the problem's own numbers. So
every statistic is broken down by kind. With planted labels (the world): `planted_number`,
`planted_word`, `own_number` (a number outside every planted span: one the problem needs) and
`other`. Without labels (any corpus): `number`, `word` and `punctuation`. In both, `protected` is
text the config protects from scoring and pruning (`detection.protect`, e.g. a fixed reasoning
instruction): it is never scored, so counting it as `other` would dilute that kind's statistics
with tokens detection cannot flag. Whitespace-only tokens are `whitespace` in both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

PROTECTED = "protected"
PLANTED_KINDS = ("planted_number", "planted_word", "own_number", "other", PROTECTED)
CORPUS_KINDS = ("number", "word", "punctuation", PROTECTED)
WHITESPACE = "whitespace"

Span = tuple[int, int]


def overlaps(start: int, end: int, spans: Iterable[Sequence[int]]) -> bool:
    """Whether [start, end) shares a character with one of the [a, b) `spans`."""
    return any(a < end and b > start for a, b in spans)


def token_kinds(
    texts: Sequence[str],
    starts: Sequence[int],
    ends: Sequence[int],
    planted: Sequence[Span] | None,
    protected: Sequence[Span] = (),
) -> list[str]:
    """The kind of each instruction token (its text and [start, end) in the instruction).

    `planted` None: the corpus has no labels, so the unlabelled kinds are used; a list (possibly
    empty, e.g. the distractor-free test) gives the planted kinds. A token overlapping a
    `protected` span is `protected` in both.
    """
    kinds = []
    for text, start, end in zip(texts, starts, ends):
        if not text.strip():
            kinds.append(WHITESPACE)
            continue
        number = any(c.isdigit() for c in text)
        if overlaps(start, end, protected):
            kinds.append(PROTECTED)
        elif planted is not None:
            if overlaps(start, end, planted):
                kinds.append("planted_number" if number else "planted_word")
            else:
                kinds.append("own_number" if number else "other")
        elif number:
            kinds.append("number")
        else:
            kinds.append("word" if any(c.isalnum() for c in text) else "punctuation")
    return kinds
