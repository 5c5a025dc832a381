"""Map per-token scores from one tokenisation of a text onto another, through its characters.

Teacher and student may tokenise the same field (instruction or response) differently, and
detection compares them on the student's tokens. Character offsets into the field text are the
one coordinate both share, so each character takes the score of the source token(s) covering it
and each destination token reduces its characters' scores:

- "max" (default): a destination token is as salient as its most salient part, so one salient
  source token is not diluted by merging it with neutral neighbours.
- "mean": the average over the token's characters, weighting each character alike.
- "sum": each source token's score is spread evenly over its characters and summed, so a score
  is conserved: a source token split in two gives each piece a share by length.

Characters that no source token covers (the source tokeniser merged them into template text, or
its tokens there are unscored: NaN) are left out of the reduction. A destination token none of
whose characters is covered gets NaN: it has no source score, and detection never flags it.
Where source tokens overlap (byte-level pieces of one multi-byte character share its offsets),
a character takes their max, mean or sum likewise.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

REDUCTIONS = ("max", "mean", "sum")


def _offsets(
    starts: npt.ArrayLike, ends: npt.ArrayLike, what: str
) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    if lo.shape != hi.shape or lo.ndim != 1:
        raise ValueError(
            f"{what} starts and ends must be 1-d and of equal length, got {lo.shape} and {hi.shape}"
        )
    if (lo < 0).any() or (hi < lo).any():
        raise ValueError(
            f"{what} offsets must satisfy 0 <= start <= end (template tokens have none)"
        )
    return lo, hi


def _chars(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(token index, character index) for every character of every token, shape [sum of lengths]."""
    lengths = ends - starts
    token = np.repeat(np.arange(len(starts)), lengths)
    first = np.cumsum(lengths) - lengths  # where each token's characters begin in the flat array
    char = np.arange(int(lengths.sum())) + np.repeat(starts - first, lengths)
    return token, char


def _reduce(index: np.ndarray, values: np.ndarray, n: int, reduce: str) -> np.ndarray:
    """Reduce `values` into `n` bins by `index`; NaN for empty bins."""
    if reduce == "max":
        out = np.full(n, np.nan)
        np.fmax.at(out, index, values)
        return out
    count = np.bincount(index, minlength=n)
    total = np.bincount(index, weights=values, minlength=n)
    if reduce == "mean":
        total = total / np.maximum(count, 1)
    return np.where(count > 0, total, np.nan)


def align_scores(
    src_starts: npt.ArrayLike,
    src_ends: npt.ArrayLike,
    src_scores: npt.ArrayLike,
    dst_starts: npt.ArrayLike,
    dst_ends: npt.ArrayLike,
    reduce: str = "max",
) -> np.ndarray:
    """Scores of source tokens [S] mapped onto destination tokens [D] of the same text.

    All offsets are character offsets [start, end) into the same field text. Returns float64 [D],
    NaN for a destination token no scored source token covers (rules: module docstring).
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; choose one of {REDUCTIONS}")
    src_lo, src_hi = _offsets(src_starts, src_ends, "source")
    dst_lo, dst_hi = _offsets(dst_starts, dst_ends, "destination")
    scores = np.asarray(src_scores, dtype=np.float64)
    if scores.shape != src_lo.shape:
        raise ValueError(f"source scores of shape {scores.shape} for {len(src_lo)} source tokens")
    n_chars = int(max(src_hi.max(initial=0), dst_hi.max(initial=0)))

    token, char = _chars(src_lo, src_hi)
    values = scores[token] / (src_hi - src_lo)[token] if reduce == "sum" else scores[token]
    scored = np.isfinite(values)
    per_char = _reduce(char[scored], values[scored], n_chars, reduce)

    token, char = _chars(dst_lo, dst_hi)
    values = per_char[char]
    covered = np.isfinite(values)
    return _reduce(token[covered], values[covered], len(dst_lo), reduce)
