"""The channel between a program and its tests: plain values only, exact types, both ends.

Both ends run here in one process (the program's in a thread) over a socket pair: the wire and
the stand-ins are what is tested; `test_isolated_tests` runs them in sandboxes."""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from leafpipe.evaluation.grading.call_channel import (
    NonPlainValue,
    ProgramError,
    ProgramFailed,
    _Remote,
    decode,
    encode,
    serve_program,
)

PLAIN = [
    None,
    True,
    0,
    -(10**30),
    1.5,
    -0.0,
    float("inf"),
    "é\n",
    b"\x00\xff",
    2 + 3j,
    [1, [2.0, "x"]],
    (1, (2,)),
    {1: "a", (1, 2): [3], "k": {None: False}},
    {1, (2, 3)},
    frozenset({"a"}),
]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_values_cross_with_their_exact_types(value: Any) -> None:
    back = decode(encode(value))
    assert back == value and type(back) is type(value)
    assert repr(back) == repr(value)  # nested types too: (1, (2,)) stays a tuple of a tuple


def test_nan_crosses_as_nan() -> None:
    assert math.isnan(decode(encode(float("nan"))))


class _Int(int):
    pass


class _Always:
    def __eq__(self, other: object) -> bool:
        return True


@pytest.mark.parametrize(
    ("value", "name"),
    [(_Int(3), "_Int"), (_Always(), "_Always"), ([1, _Always()], "_Always"), (iter([]), "iter")],
)
def test_values_of_other_types_are_refused(value: Any, name: str) -> None:
    with pytest.raises(NonPlainValue, match=f"non-plain value of type .*{name}"):
        encode(value)


def test_a_list_that_holds_itself_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(NonPlainValue, match="nested deeper"):
        encode(loop)


@pytest.mark.parametrize("data", [{"x": 1}, {"t": 1}, {"d": [[1]]}, {"c": [1, 2]}, {}])
def test_decoding_accepts_only_what_encode_writes(data: Any) -> None:
    with pytest.raises(ValueError, match="not an encoded value"):
        decode(data)


SOLUTION = """\
class Counter:
    def __init__(self, start):
        self.n = start

    def add(self, k):
        self.n += k
        return self.n


class Weird:
    def __eq__(self, other):
        return True


def double(x):
    return 2 * x


def weird():
    return Weird()


def fails(kind):
    if kind == "stop":
        raise StopIteration
    if kind == "custom":
        class Oops(Exception):
            pass
        raise Oops("custom")
    raise ValueError("bad " + kind)


def sort_in_place(nums):
    nums.sort()
"""


@pytest.fixture
def remote() -> Iterator[dict[str, Any]]:
    """Stand-ins for SOLUTION's callables, served by a thread over a socket pair."""
    program, tests = socket.socketpair()
    server = threading.Thread(
        target=serve_program, args=(program.detach(), SOLUTION, "import math\n"), daemon=True
    )
    server.start()
    stand_ins = _Remote(tests.fileno()).stand_ins()
    yield stand_ins
    tests.close()
    server.join(timeout=5)
    assert not server.is_alive()  # end of file ends the program's loop


def test_the_program_exports_its_callables_but_not_the_preludes(remote: dict[str, Any]) -> None:
    assert sorted(remote) == ["Counter", "Weird", "double", "fails", "sort_in_place", "weird"]
    assert remote["double"](21) == 42 and remote["double"]((1,)) == (1, 1)


def test_instances_stay_in_the_program_and_keep_their_state(remote: dict[str, Any]) -> None:
    counter = remote["Counter"](10)
    assert isinstance(remote["Counter"], type)  # lcb_runner's `isinstance(Solution, type)`
    assert counter.add(1) == 11 and counter.add(2) == 13
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        counter.missing()


def test_an_object_with_its_own_eq_does_not_cross(remote: dict[str, Any]) -> None:
    with pytest.raises(ProgramError, match="returned a non-plain value of type __solution__.Weird"):
        remote["weird"]()


def test_exceptions_come_back_as_builtins_or_program_errors(remote: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="bad input"):
        remote["fails"]("input")
    with pytest.raises(ProgramError, match="Oops: custom"):
        remote["fails"]("custom")
    # Rebuilt, a StopIteration would end a `map` over the cases early.
    assert list(map(remote["fails"], [])) == []
    with pytest.raises(ProgramError, match="StopIteration"):
        list(map(remote["fails"], ["stop"]))


def test_arguments_mutated_in_place_are_sent_back(remote: dict[str, Any]) -> None:
    nums = [3, 1, 2]
    assert remote["sort_in_place"](nums) is None
    assert nums == [1, 2, 3]


def test_a_program_that_fails_before_the_tests_is_a_program_failure() -> None:
    program, tests = socket.socketpair()
    with pytest.raises(ZeroDivisionError):
        serve_program(program.detach(), "1 / 0\n", "")
    with pytest.raises(ProgramFailed, match="before the tests completed: ZeroDivisionError"):
        _Remote(tests.fileno()).stand_ins()
