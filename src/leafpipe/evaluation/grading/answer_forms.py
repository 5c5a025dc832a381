"""Rewrite an answer into the form math-verify reads as a careful person would, before parsing.

math-verify reads letters as symbols multiplied together: "18 dollars" is 18·d·o·l·l·a·r·s and
"1.5e3" is 1.5·e·3, so a right answer with a unit, a currency word or e-notation equals no number.
A careful grader reads them as 18 and 1500, and as the choice C in "(C) 18" when the gold is a
letter. The rules only remove decoration or spell a number another way; the number itself is
never changed, so "18 dollars" still differs from 180 and "2.5e-4" from 0.0025.

Every pattern is linear in the answer's length: the other grading steps run on untrusted model
output of any size.
"""

from __future__ import annotations

import re

# A degree sign (Unicode or `\degree`) is decoration, as `^\circ` already is to math-verify.
_DEGREE = re.compile(r"°|\\degree(?![A-Za-z])")
# A `\text{...}`-style wrapper around a number and what follows it (`\text{12 cm}`,
# `\textbf{18}`): unwrapped, so that the unit rules below see the unit. Word answers
# (`\text{Monday}`, `\text{(C)}`) stay wrapped: math-verify reads those.
_NUMBER_IN_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{\s*([-+]?\d[^{}]*)\}")
# A percent sign that LaTeX would read as a comment (a bare `%`), and percent written out.
_BARE_PERCENT = re.compile(r"(?<!\\)%")
_PERCENT_WORD = re.compile(r"\s?\b(?:percent|per cent)\b", re.IGNORECASE)
# A currency symbol or code before or after the amount.
_CURRENCY = re.compile(r"\\\$|\$|€|£|¥|₹|\\euro(?![A-Za-z])|\\pounds(?![A-Za-z])|\bUSD\b")
# e-notation, "1.5e3" or "2.5E-4", as a whole token (not the `e` of `2e^{x}` or of a word).
_E_NOTATION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")
# A word that may follow a number: a unit ("cm", "km/h", "m^2"), a currency or a counted thing
# ("eggs").
_WORD = re.compile(r"[A-Za-z][A-Za-z'.]*(?:/[A-Za-z]+)?(?:\^\{?\d\}?)?")
_TOKEN = re.compile(r"\S+")
# Words after a number that change or name its value, so they are kept: scale words ("5
# million"), math words ("2 pi"), percent (read as `\%` first).
_VALUE_WORDS = frozenset(
    "pi e i inf infinity sqrt squared cubed dozen dozens hundred hundreds thousand thousands "
    "million millions billion billions trillion trillions half halves third thirds quarter "
    "quarters percent".split()
)
# Single letters are variables ("3 x"), except these unit symbols.
_UNIT_LETTERS = frozenset("m g s h L".split())
# An inequality in one variable, read as the interval a careful grader sees in it: x < 3 is
# (-infinity, 3). LaTeX relations are first written as one character each, so that the answer
# can be split on them.
_RELATION_COMMAND = re.compile(r"\\(leq?|geq?|lt|gt)(?![A-Za-z])")
_RELATION_SYMBOLS = {"le": "≤", "leq": "≤", "ge": "≥", "geq": "≥", "lt": "<", "gt": ">"}
_RELATION = re.compile(r"([<>≤≥])")
_CLOSING = {"<": ")", "≤": "]"}
_OPENING = {">": "(", "≥": "["}
# A gold that may be a "what percent" figure: a plain number.
_PLAIN_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
# A multiple-choice letter, alone or wrapped: "C", "(C)", "\text{(C)}", "\textbf{C}".
_CHOICE = re.compile(r"\s*(?:\\text(?:bf)?\s*\{\s*)?\(?([A-E])\)?(?:\s*\})?\s*")
# A choice letter that opens an answer followed by its option's text: "(C) 18", "C) 18", "C. 18",
# and AMC's `\textbf{(D)}\ 24`.
_CHOICE_WITH_TEXT = re.compile(
    r"\s*(?:\\text(?:bf)?\s*\{\s*)?(?:\(([A-E])\)|([A-E])[).:])\s*\}?(?:\s|\\ |~)"
)


def _is_unit_word(token: str) -> bool:
    """Whether `token` names what a number counts or measures, rather than part of its value."""
    if _WORD.fullmatch(token) is None:
        return False
    bare = token.rstrip(".").lower()
    if len(bare) == 1:
        return token in _UNIT_LETTERS
    return bare not in _VALUE_WORDS


def _drop_trailing_words(answer: str) -> str:
    """`answer` without the unit or counted-thing words after its final number, if it has one."""
    tokens = list(_TOKEN.finditer(answer))
    kept = len(tokens)
    while kept > 1 and _is_unit_word(tokens[kept - 1].group()):
        kept -= 1
    if kept == len(tokens):
        return answer
    rest = answer[: tokens[kept].start()].rstrip()
    return rest if rest[-1:].isdigit() or rest.endswith("}") else answer


def _interval(answer: str) -> str:
    """An inequality in one variable as its interval (`x \\ge 2` is `[2, \\infty)`), other
    answers as they are."""
    text = _RELATION_COMMAND.sub(lambda m: _RELATION_SYMBOLS[m.group(1)], answer)
    parts = [part.strip() for part in _RELATION.split(text)]
    if len(parts) == 3 and len(parts[0]) == 1 and parts[0].isalpha() and parts[2]:
        _, relation, bound = parts
        if relation in _CLOSING:
            return f"(-\\infty, {bound}{_CLOSING[relation]}"
        return f"{_OPENING[relation]}{bound}, \\infty)"
    if len(parts) == 5 and len(parts[2]) == 1 and parts[2].isalpha() and parts[0] and parts[4]:
        low, left, _, right, high = parts
        if left in _CLOSING and right in _CLOSING:
            return f"{'(' if left == '<' else '['}{low}, {high}{_CLOSING[right]}"
    return answer


def simplify(answer: str) -> str:
    """`answer` with units, currency, degree signs and e-notation read as a careful person reads
    them: "\\$18.00" and "18 dollars" are 18, "20 percent" is `20\\%`, "1.5e3" is
    `1.5\\times10^{3}`, "60°" is 60, "x < 3" is `(-\\infty, 3)`.

    Applied to the gold as well as to the answer, so a gold written the same way reads the same.
    """
    text = _DEGREE.sub("", answer).replace("~", " ")
    text = _NUMBER_IN_TEXT.sub(r"\1", text)
    text = _BARE_PERCENT.sub(r"\\%", text)
    text = _PERCENT_WORD.sub(r"\\%", text)
    text = _CURRENCY.sub("", text).strip()
    text = _E_NOTATION.sub(r"\1\\times10^{\2}", text)
    return _interval(_drop_trailing_words(text))


def percent_number(form: str, gold_form: str) -> str | None:
    """The number of a percentage answer without its sign ("12.5" for `12.5\\%`), where the gold
    can be a percent figure; else None.

    A careful grader accepts 12.5% for a gold of 12.5 (a "what percent" question) as well as for
    0.125; math-verify reads `X\\%` as both only when X is a positive integer, so the grader also
    tries the number alone. Only against a gold written as a plain number of at least 1: a
    fraction or a number below 1 is a proportion, and 0.75% is not 3/4.
    """
    gold_number = _PLAIN_NUMBER.fullmatch(gold_form.strip())
    if gold_number is None or abs(float(gold_number.group())) < 1:
        return None
    number = form.rstrip().removesuffix("\\%").rstrip()
    return number if number and len(number) < len(form.rstrip()) else None


def choice_letter(answer: str) -> str | None:
    """The multiple-choice letter `answer` consists of ("C", "(C)", `\\text{(C)}`), or None."""
    match = _CHOICE.fullmatch(answer)
    return match.group(1) if match else None


def comparable(predicted: str, gold: str) -> tuple[str, str]:
    """The forms of an answer and its gold that math-verify should compare.

    Both are simplified. When the gold is a choice letter, an answer that opens with a letter and
    then gives that option's text ("(C) 18") is read as its letter, as a careful grader does.
    """
    predicted, gold = simplify(predicted), simplify(gold)
    if choice_letter(gold) is not None:
        opening = _CHOICE_WITH_TEXT.match(predicted)
        if opening is not None:
            predicted = opening.group(1) or opening.group(2)
    return predicted, gold
