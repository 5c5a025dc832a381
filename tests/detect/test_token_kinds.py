from leafpipe.detect.spans import protected_spans
from leafpipe.detect.token_kinds import token_kinds

TEXT = "Tom has 3 pens. Mia owns 9 red cars. Reason step by step."
WORDS = [
    "Tom",
    " has",
    " 3",
    " pens",
    ".",
    " Mia",
    " owns",
    " 9",
    " red",
    " cars",
    ".",
    " ",
    "Reason",
    " step",
    " by",
    " step",
    ".",
]


def _offsets(words):
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w)
    return starts, [s + len(w) for s, w in zip(starts, words)]


STARTS, ENDS = _offsets(WORDS)
PLANTED = [(TEXT.index(" Mia"), TEXT.index(" Reason"))]  # " Mia owns 9 red cars."
PROTECTED = protected_spans(TEXT, ["Reason step by step."])


def test_words_reassemble_the_text():
    assert "".join(WORDS) == TEXT


def test_on_the_world_planted_numbers_are_told_apart_from_the_problems_own():
    kinds = token_kinds(WORDS, STARTS, ENDS, PLANTED)
    assert kinds[2] == "own_number" and kinds[7] == "planted_number"
    assert kinds[5:11] == [
        "planted_word",
        "planted_word",
        "planted_number",
        "planted_word",
        "planted_word",
        "planted_word",
    ]
    assert kinds[0] == kinds[4] == "other" and kinds[11] == "whitespace"


def test_without_labels_tokens_are_numbers_words_or_punctuation():
    kinds = token_kinds(WORDS, STARTS, ENDS, None)
    assert kinds[:5] == ["word", "word", "number", "word", "punctuation"]
    assert "planted_number" not in kinds and "own_number" not in kinds


def test_protected_text_is_its_own_kind_with_labels_or_without():
    assert PROTECTED == [(TEXT.index("Reason"), len(TEXT))]
    for planted in (PLANTED, None):
        kinds = token_kinds(WORDS, STARTS, ENDS, planted, PROTECTED)
        assert kinds[12:] == ["protected"] * 5
        assert "protected" not in kinds[:12]
