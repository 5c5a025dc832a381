import numpy as np
import pytest

from leafpipe.text.alignment import REDUCTIONS, align_scores
from leafpipe.text.templates import INSTRUCTION, encode_sample
from leafpipe.text.tokenizer import train_tokenizer


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_identical_tokenisation_gives_the_source_scores(reduce):
    starts, ends = np.array([0, 3, 4, 9, 10]), np.array([3, 4, 9, 10, 14])
    scores = np.array([0.3, 1.7, 0.1, 2.9, 0.6])
    out = align_scores(starts, ends, scores, starts, ends, reduce=reduce)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, scores, rtol=1e-12, atol=0)


# "abcdef": source "ab" | "c" | "def", destination "a" | "bc" | "d" | "ef" (a split and a merge).
SRC = ([0, 2, 3], [2, 3, 6], [1.0, 4.0, 2.0])
DST = ([0, 1, 3, 4], [1, 3, 4, 6])


@pytest.mark.parametrize(
    ("reduce", "expected"),
    [
        ("max", [1.0, 4.0, 2.0, 2.0]),
        ("mean", [1.0, 2.5, 2.0, 2.0]),  # "bc": (1 + 4) / 2
        ("sum", [0.5, 4.5, 2 / 3, 4 / 3]),  # "ab" spreads 0.5 per character, "def" 2/3
    ],
)
def test_split_and_merge_by_hand(reduce, expected):
    np.testing.assert_allclose(align_scores(*SRC, *DST, reduce=reduce), expected)


def test_sum_conserves_the_total_score():
    assert align_scores(*SRC, *DST, reduce="sum").sum() == pytest.approx(sum(SRC[2]))


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_uncovered_characters_are_ignored_and_uncovered_tokens_are_nan(reduce):
    # Source covers "bc" of "abcd" only; "c" is scored NaN (unscored), which covers nothing.
    out = align_scores([1, 2], [2, 3], [5.0, np.nan], [0, 0, 2, 3], [1, 2, 4, 3], reduce=reduce)
    assert np.isnan(out[0])  # "a": no source token
    assert out[1] == 5.0  # "ab": only "b" counts
    assert np.isnan(out[2])  # "cd": "c" unscored, "d" uncovered
    assert np.isnan(out[3])  # an empty token has no characters


def test_overlapping_source_tokens_share_a_character():
    # Byte-level pieces of one multi-byte character carry the same offsets.
    args = ([0, 0, 1], [1, 1, 2], [1.0, 3.0, 7.0], [0], [1])
    assert align_scores(*args, reduce="max")[0] == 3.0
    assert align_scores(*args, reduce="mean")[0] == 2.0


def test_unknown_reduction_is_an_error():
    with pytest.raises(ValueError, match="unknown reduction 'median'"):
        align_scores(*SRC, *DST, reduce="median")


@pytest.mark.parametrize(
    ("src", "dst", "match"),
    [
        (([0, 2], [2, 3], [1.0]), DST, "source scores"),
        (([0, 2], [2], [1.0, 2.0]), DST, "source starts and ends"),
        (SRC, ([0, 1], [1]), "destination starts and ends"),
        (SRC, ([-1], [-1]), "0 <= start <= end"),
    ],
)
def test_mismatched_or_bad_offsets_are_an_error(src, dst, match):
    with pytest.raises(ValueError, match=match):
        align_scores(*src, *dst)


def test_scores_cross_two_different_tokenizers_of_the_same_sample(tokenizer, samples):
    coarse = train_tokenizer([t for pair in samples for t in pair] * 20, vocab_size=600)
    instruction, response = samples[0]
    fine_enc, coarse_enc = (
        encode_sample(tokenizer, instruction, response),
        encode_sample(coarse, instruction, response),
    )

    def instruction_offsets(enc) -> tuple[np.ndarray, np.ndarray]:
        spans = np.array([o for f, o in zip(enc.fields, enc.offsets) if f == INSTRUCTION])
        return spans[:, 0], spans[:, 1]

    (f_lo, f_hi), (c_lo, c_hi) = instruction_offsets(fine_enc), instruction_offsets(coarse_enc)
    assert len(c_lo) < len(f_lo)  # the two really tokenise differently
    lengths = (c_hi - c_lo).astype(float)
    nonempty = f_hi > f_lo
    assert np.isfinite(align_scores(c_lo, c_hi, lengths, f_lo, f_hi, reduce="max")[nonempty]).all()
    # Each coarse token spreads its length as 1 per character, so summing gives the fine lengths.
    summed = align_scores(c_lo, c_hi, lengths, f_lo, f_hi, reduce="sum")
    np.testing.assert_allclose(summed[nonempty], (f_hi - f_lo)[nonempty])
