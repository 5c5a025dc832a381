"""Reasoning steps of a response, so that earlier steps can be scored by the loss of later ones.

A step starts at a character offset; a token belongs to the last step starting at or before it.
The split rule is configurable because datasets mark steps differently.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

STEP_SPLITS = {
    # every non-empty line: the confounder world's and most chain-of-thought data
    "lines": re.compile(r"^(?=[^\n]*\S)", re.MULTILINE),
    # paragraphs separated by blank lines
    "blank_lines": re.compile(r"(?:\A|\n[ \t]*\n)(?=[^\n]*\S)"),
    # "Step 1:", "Step 2." …
    "step_k": re.compile(r"(?:\A|(?<=\s))Step\s+\d+\s*[:.)]", re.IGNORECASE),
    # "1.", "2)" at the start of a line
    "numbered": re.compile(r"^[ \t]*\d+[.)]\s", re.MULTILINE),
}


def reasoning_step_starts(text: str, split: str) -> list[int]:
    """Character offsets where steps begin; the first step always starts at 0."""
    if split not in STEP_SPLITS:
        raise ValueError(f"unknown step split {split!r}; choose one of {sorted(STEP_SPLITS)}")
    starts = sorted(
        {
            0,
            *(
                m.end() if split == "blank_lines" else m.start()
                for m in STEP_SPLITS[split].finditer(text)
            ),
        }
    )
    return [s for s in starts if s < len(text)] or [0]


def reasoning_step_of(starts: Sequence[int], char_start: int) -> int:
    """Index of the step a token starting at `char_start` belongs to."""
    return max(bisect.bisect_right(starts, char_start) - 1, 0)
