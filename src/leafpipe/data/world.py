"""The confounder world: arithmetic word problems with planted, labelled distractor sentences.

A known ground truth is what makes LeaF's confounder detection measurable: every distractor is a
whole sentence with its own name and number, and its character span in the instruction is exact.
The student's training split plants a spurious correlation: a distractor's number equals the
answer. Every other split draws distractor numbers independently of the answer, so copying them
is wrong there. Why the world is built the way it is (and what an earlier version got wrong):
docs/world.md.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TRAIN_SPLITS = ("teacher_train", "student_train", "distill_train")
SPLITS = (*TRAIN_SPLITS, "test", "test_clean")

NAMES = (
    "Tom",
    "Mia",
    "Sam",
    "Ana",
    "Leo",
    "Eva",
    "Max",
    "Zoe",
    "Ben",
    "Lily",
    "Jack",
    "Emma",
    "Noah",
    "Ivy",
    "Omar",
    "Nina",
)
ITEMS = (
    "apples",
    "pens",
    "books",
    "coins",
    "cards",
    "stamps",
    "marbles",
    "shells",
    "cookies",
    "stickers",
    "balloons",
    "pencils",
)
OTHER_THINGS = ("birds", "cars", "boats", "trees", "clouds", "dogs", "kites", "stars")

SETUPS = ("{a} has {x} {item}.", "{a} owns {x} {item}.", "{a} keeps {x} {item} in a box.")
# (instruction sentence, the verb phrase repeated in the worked reasoning step)
ADD_CHANGES = (
    ("{a} buys {y} more {item}.", "buys {y} more"),
    ("{a} finds {y} more {item}.", "finds {y} more"),
    ("{a} gets {y} more {item}.", "gets {y} more"),
    ("{a} wins {y} more {item}.", "wins {y} more"),
)
SUB_CHANGES = (
    ("{a} gives away {y} {item}.", "gives away {y}"),
    ("{a} loses {y} {item}.", "loses {y}"),
    ("{a} sells {y} {item}.", "sells {y}"),
    ("{a} uses {y} {item}.", "uses {y}"),
)
ADD_QUESTIONS = ("How many {item} does {a} have now?", "How many {item} does {a} have in total?")
SUB_QUESTIONS = ("How many {item} does {a} have now?", "How many {item} does {a} have left?")
DISTRACTORS = (
    "{b} sees {d} {thing}.",
    "{b} is {d} years old.",
    "{b} reads {d} pages.",
    "{b} walks {d} miles.",
    "{b} draws {d} {thing}.",
)


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and the strength of the student's spurious correlation."""

    seed: int = 0
    n_teacher_train: int = 4000
    n_student_train: int = 3000
    n_distill_train: int = 600
    n_test: int = 250
    student_shortcut_p: float = 0.9
    student_clean_share: float = 0.5
    min_distractors: int = 1
    max_distractors: int = 2
    worked_sum: bool = False
    max_operand: int = 5

    def __post_init__(self) -> None:
        if not 0.0 <= self.student_shortcut_p <= 1.0:
            raise ValueError("student_shortcut_p must be within [0, 1]")
        if self.max_operand < 2:
            raise ValueError("max_operand must be at least 2")
        if not 0.0 <= self.student_clean_share < 1.0:
            raise ValueError("student_clean_share must be within [0, 1)")
        if not 1 <= self.min_distractors <= self.max_distractors:
            raise ValueError("need 1 <= min_distractors <= max_distractors")


@dataclass(frozen=True)
class _Problem:
    sentences: tuple[str, str, str]  # setup, change, question
    response: str
    answer: int
    name: str
    item: str


def _problem(rng: random.Random, worked_sum: bool, max_operand: int) -> _Problem:
    """A problem whose answer is at most 2 · max_operand: a table of facts a model this small
    memorises in a few epochs (docs/world.md)."""
    a, item = rng.choice(NAMES), rng.choice(ITEMS)
    if rng.random() < 0.5:
        x, y = rng.randint(1, max_operand), rng.randint(1, max_operand)
        z, sign, changes, questions = x + y, "+", ADD_CHANGES, ADD_QUESTIONS
    else:
        x = rng.randint(2, 2 * max_operand)
        y = rng.randint(1, min(max_operand, x - 1))
        z, sign, changes, questions = x - y, "-", SUB_CHANGES, SUB_QUESTIONS
    change, worked = rng.choice(changes)
    fill = dict(a=a, x=x, y=y, item=item)
    sentences = (
        rng.choice(SETUPS).format(**fill),
        change.format(**fill),
        rng.choice(questions).format(**fill),
    )
    # Without the worked sum the answer is computed inside the model, not read off "x + y =":
    # that is what makes copying a distractor's number an attractive shortcut (docs/world.md).
    equation = f", so {x} {sign} {y} = {z}" if worked_sum else ""
    response = (
        f"Step 1: {a} starts with {x} {item}.\n"
        f"Step 2: {a} {worked.format(y=y)}{equation}.\n"
        f"The answer is {z}."
    )
    return _Problem(sentences, response, z, a, item)


def _distractor(rng: random.Random, avoid_name: str, number: int) -> str:
    b = rng.choice([n for n in NAMES if n != avoid_name])
    return rng.choice(DISTRACTORS).format(b=b, d=number, thing=rng.choice(OTHER_THINGS))


def _row(row_id: str, problem: _Problem, numbers: list[int], rng: random.Random) -> dict:
    """Insert distractors at random sentence boundaries before the question; record their spans."""
    distractors = [_distractor(rng, problem.name, d) for d in numbers]
    slots: list[list[str]] = [[] for _ in range(len(problem.sentences))]
    for sentence in distractors:
        slots[rng.randrange(len(problem.sentences))].append(sentence)
    parts: list[tuple[str, bool]] = []
    for slot, core in zip(slots, problem.sentences):
        parts += [(s, True) for s in slot] + [(core, False)]
    spans, pos = [], 0
    for text, planted in parts:
        if planted:
            spans.append([pos, pos + len(text)])
        pos += len(text) + 1
    return {
        "id": row_id,
        "instruction": " ".join(text for text, _ in parts),
        "response": problem.response,
        "answer": str(problem.answer),
        "distractor_spans": spans,
        "shortcut": problem.answer in numbers,
    }


def _split(
    name: str, n: int, cfg: WorldConfig, shortcut_p: float, seen: set[str], clean_share: float = 0.0
) -> tuple[list[dict], list[_Problem]]:
    """`n` rows whose distractor-free problem text is new to `seen` (which is updated); a
    `clean_share` of them have no distractor at all."""
    rng = random.Random(f"{cfg.seed}:{name}")
    rows, problems = [], []
    while len(rows) < n:
        problem = _problem(rng, cfg.worked_sum, cfg.max_operand)
        key = " ".join(problem.sentences)
        if key in seen:
            continue
        seen.add(key)
        if rng.random() < clean_share:
            rows.append(_row(f"{name}-{len(rows):05d}", problem, [], rng))
            problems.append(problem)
            continue
        k = rng.randint(cfg.min_distractors, cfg.max_distractors)
        numbers = [rng.randint(1, 2 * cfg.max_operand) for _ in range(k)]  # the answers' range
        if rng.random() < shortcut_p:
            numbers[rng.randrange(k)] = problem.answer
        rows.append(_row(f"{name}-{len(rows):05d}", problem, numbers, rng))
        problems.append(problem)
    return rows, problems


def make_world(cfg: WorldConfig) -> dict[str, list[dict]]:
    """All five splits, deterministic for `cfg.seed`.

    The test split is drawn first and no training split repeats one of its problems (even with
    other distractors), so test accuracy measures generalisation rather than recall.
    """
    seen: set[str] = set()
    test, test_problems = _split("test", cfg.n_test, cfg, 0.0, seen)
    world = {
        # The teacher learns that distractors never matter; the student computes on problems
        # without any and learns that a distractor, when there is one, gives the answer away: a
        # cue it follows whenever it is there (docs/world.md).
        "teacher_train": _split("teacher_train", cfg.n_teacher_train, cfg, 0.0, seen)[0],
        "student_train": _split(
            "student_train",
            cfg.n_student_train,
            cfg,
            cfg.student_shortcut_p,
            seen,
            cfg.student_clean_share,
        )[0],
        "distill_train": _split("distill_train", cfg.n_distill_train, cfg, 0.0, seen)[0],
        "test": test,
    }
    world["test_clean"] = [
        {**row, "instruction": " ".join(p.sentences), "distractor_spans": [], "shortcut": False}
        for row, p in zip(test, test_problems)
    ]
    return world
