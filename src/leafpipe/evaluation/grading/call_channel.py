"""The narrow channel between a program under test and its tests, and the code at both ends.

`isolated_tests` runs a program and its tests in two sandboxed processes joined by a socket
pair. This module is what the two run: `isolated_tests` embeds its source in both (a sandboxed
process imports nothing of leafpipe), so it uses the standard library only. The program's end
(`serve_program`) runs the solution and answers calls of its top-level functions and classes;
the tests' end (`run_tests`) gives the tests stand-ins for those names (`_Remote.stand_ins`).

Only *plain* values cross: None, bool, int, float (nan and inf included), complex, str, bytes,
and list, tuple, dict, set, frozenset of them. The program's end refuses anything else, a
subclass of int or an object with its own `__eq__` ("returned a non-plain value of type X"),
and the tests' end builds every value it receives from JSON itself. So the tests compare values
of their own process, with builtins, a trace function and files the program cannot reach.

An instance made by calling a class stays in the program's process: the tests hold a handle and
call its methods by name (LeetCode's `Solution().method(...)`); attributes other than methods do
not cross. A call that mutates a list, dict or set argument sends the arguments back, and the
tests' originals are updated in place, so "modify nums in place" problems can be tested.
Exceptions the program raises come back as the builtin exception of that name with its message
(`ProgramError` for other types and for StopIteration, which would end a loop of the tests), so
tests that expect a raise still work. A program that exits, breaks the protocol or fails before
the tests start raises `ProgramFailed`, a BaseException that a test's `except Exception` cannot
take for an expected error. Tests that pass the program an argument that is not plain (a
ListNode they built) end with `SHARED_STATE_EXIT`: they need the same-process mode, whatever the
program does (the program never sees such a call). The program's process ends when the tests' does
(`exit_when_tests_end`), even in the middle of a call the tests stopped waiting for.

Wire: each message is 4 bytes of big-endian length and that many bytes of JSON. Lists are JSON
arrays, the other containers one-key objects tagged by type ({"t": [...]} a tuple, {"d": [[k,
v], ...]} a dict); floats are JSON numbers (NaN, Infinity as Python's json writes them).
Messages: the program first sends {"exports": [[name, "function" | "class"], ...]} or, when its
top-level code raised, {"failed": "Type: message"}; then answers each request, {"call": name} or
{"method": name, "handle": n}, both with "args" and "kwargs", by {"value": v} (a class call:
{"handle": n}), plus "args" after the call where they changed, or by {"raised": [type, message]}.
"""

# The solution and tests are compiled with dont_inherit=True: this file's `from __future__`
# must not change how their code runs.
from __future__ import annotations

import builtins
import json
import os
import sys

# Every sandboxed process compiles and imports this afresh: what it imports is paid per sample,
# so no socket (the channel is a plain file descriptor), no typing (annotations only), and
# traceback only when needed.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Longest message the tests' end accepts: bounds its memory whatever the program sends.
MAX_MESSAGE_BYTES = 64 << 20
# Deepest nesting of a value; deeper (or a list that holds itself) is refused.
MAX_DEPTH = 200
# The tests process's exit code when the program failed them (`ProgramFailed`): the verdict is
# then the program's own (its timeout, its traceback), not the tests'.
PROGRAM_FAILED_EXIT = 3
# Its exit code when the tests tried to pass an object that cannot cross (a ListNode they built):
# such tests need the same-process mode.
SHARED_STATE_EXIT = 4
# Longest exception message passed back.
_MAX_MESSAGE_CHARS = 2000
_HEADER_BYTES = 4
_TAGS: dict[type, str] = {tuple: "t", set: "s", frozenset: "f"}
_BUILDERS: dict[str, type] = {"t": tuple, "s": set, "f": frozenset}
# Exceptions the interpreter reads as "the iteration is over": rebuilt in the tests, one from a
# call made in a `map` over the cases would end it early, and `all(...)` of nothing is true.
_CONTROL_FLOW = (StopIteration, StopAsyncIteration)


class NonPlainValue(TypeError):
    """A value of a type that may not cross the channel."""


class ProgramError(Exception):
    """The program raised an exception of a type that is not a builtin `Exception`."""


class ProgramFailed(BaseException):
    """The program exited, broke the protocol, or failed before the tests began."""


class SharedStateNeeded(BaseException):
    """The tests passed the program an argument that is not a plain value."""


# --- values -----------------------------------------------------------------------------------


def encode(value: Any, depth: int = 0) -> Any:
    """`value` as JSON-ready data; raises NonPlainValue unless it is plain, exact types only."""
    kind = type(value)
    if depth > MAX_DEPTH:
        raise NonPlainValue(f"a value nested deeper than {MAX_DEPTH} levels")
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [encode(item, depth + 1) for item in value]
    if kind in _TAGS:
        return {_TAGS[kind]: [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is complex:
        return {"c": [value.real, value.imag]}
    if kind is bytes:
        return {"b": value.hex()}
    raise NonPlainValue(f"a non-plain value of type {kind.__module__}.{kind.__qualname__}")


def decode(data: Any) -> Any:
    """The value `encode` made `data` from; raises ValueError on anything else."""
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:
        return [decode(item) for item in data]
    if type(data) is not dict or len(data) != 1:
        raise ValueError("not an encoded value")
    ((tag, body),) = data.items()
    if tag in _BUILDERS and type(body) is list:
        return _BUILDERS[tag](decode(item) for item in body)
    if tag == "d" and type(body) is list and all(type(p) is list and len(p) == 2 for p in body):
        return {decode(k): decode(v) for k, v in body}
    if tag == "c" and type(body) is list and [type(x) for x in body] == [float, float]:
        return complex(*body)
    if tag == "b" and type(body) is str:
        return bytes.fromhex(body)
    raise ValueError(f"not an encoded value: tag {tag!r}")


# --- framing ----------------------------------------------------------------------------------


def send(channel: int, message: Any) -> None:
    body = json.dumps(message).encode()
    data = memoryview(len(body).to_bytes(_HEADER_BYTES, "big") + body)
    while data:
        data = data[os.write(channel, data) :]


def receive(channel: int) -> Any:
    """The next message; None at end of file before one begins."""
    header = _read(channel, _HEADER_BYTES)
    if header is None:
        return None
    size = int.from_bytes(header, "big")
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"a message of {size} bytes, over {MAX_MESSAGE_BYTES}")
    body = _read(channel, size)
    if body is None:
        raise ValueError("the channel closed within a message")
    return json.loads(body)


def _read(channel: int, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(channel, min(size - len(data), 1 << 20))
        if not chunk:
            if data:
                raise ValueError("the channel closed within a message")
            return None
        data += chunk
    return bytes(data)


# --- the program's end ------------------------------------------------------------------------


def exit_when_tests_end(fd: int) -> None:
    """End this process as soon as the tests' end of the channel closes, even mid-call.

    The tests stop waiting for a call past its time limit (LiveCodeBench's timer) or fail; a
    program still computing would otherwise hold its sandbox, and a grading worker, until its
    own wall clock. A thread waits for the peer's hang-up (POLLRDHUP: no data is consumed, so
    the requests stay the main loop's). A program may stop this thread; it then only keeps its
    own sandbox busy until its limits end it.
    """
    import _thread
    import select

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, select.POLLRDHUP)
        poller.poll()
        os._exit(0)

    _thread.start_new_thread(watch, ())


def serve_program(fd: int, solution: str, prelude: str) -> None:
    """Run `prelude` and `solution` as module "__solution__", export their top-level callables
    (those the prelude bound are the judge's, not the program's), then answer calls until the
    tests' end closes the channel."""
    namespace: dict[str, Any] = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        if prelude:
            exec(compile(prelude, "prelude.py", "exec", dont_inherit=True), namespace)
        judge = dict(namespace)
        exec(compile(solution, "solution.py", "exec", dont_inherit=True), namespace)
    except BaseException as exc:
        send(fd, {"failed": _describe(exc)})
        raise
    exports = [
        [name, "class" if isinstance(value, type) else "function"]
        for name, value in namespace.items()
        if callable(value)
        and not name.startswith("__")
        and not isinstance(value, type(builtins))  # a module
        and judge.get(name) is not value
    ]
    send(fd, {"exports": exports})
    handles: list[Any] = []
    try:
        while (request := receive(fd)) is not None:
            send(fd, _answer(request, namespace, handles))
    except ConnectionError:  # the tests ended while a call ran: they need no reply
        pass


def _answer(request: dict[str, Any], namespace: dict[str, Any], handles: list[Any]) -> Any:
    """Make one call; the reply `serve_program` sends."""
    try:
        args = [decode(a) for a in request["args"]]
        kwargs = {k: decode(v) for k, v in request["kwargs"].items()}
        if "handle" in request:
            target = getattr(handles[request["handle"]], request["method"])
        else:
            target = namespace[request["call"]]
        result = target(*args, **kwargs)
        if isinstance(target, type):
            handles.append(result)
            reply = {"handle": len(handles) - 1}
        else:
            reply = {"value": _encode_result(result)}
        after = [encode(a) for a in args]
        if after != request["args"]:
            reply["args"] = after
        return reply
    except BaseException as exc:
        return {"raised": [type(exc).__name__, _message(exc)]}


def _encode_result(result: Any) -> Any:
    try:
        return encode(result)
    except NonPlainValue as exc:
        raise NonPlainValue(f"returned {exc}") from None


def _message(exc: BaseException) -> str:
    try:
        return str(exc)[:_MAX_MESSAGE_CHARS]
    except BaseException:  # the program's own __str__ may raise
        return "<message unavailable>"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_message(exc)}"


# --- the tests' end ---------------------------------------------------------------------------


def run_tests(fd: int) -> None:
    """Read the job from stdin (JSON: "prelude", "test", "marker"), run the prelude, bind the
    program's exports to stand-ins, run the tests as "__main__", then write the marker: the
    parent's sign that the tests ran to their end."""
    job = json.loads(sys.stdin.read())
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    if job["prelude"]:
        exec(compile(job["prelude"], "prelude.py", "exec", dont_inherit=True), namespace)
    try:
        namespace.update(_Remote(fd).stand_ins())
        exec(compile(job["test"], "test.py", "exec", dont_inherit=True), namespace)
    except (ProgramFailed, SharedStateNeeded) as exc:
        import traceback

        traceback.print_exc()
        sys.exit(PROGRAM_FAILED_EXIT if isinstance(exc, ProgramFailed) else SHARED_STATE_EXIT)
    os.write(1, f"\n{job['marker']}\n".encode())


class _Remote:
    """The tests' side of the channel: requests, checked replies, rebuilt values."""

    def __init__(self, channel: int) -> None:
        self.channel = channel

    def stand_ins(self) -> dict[str, Any]:
        """A stand-in for each name the program exports: a function, or a class whose
        instances forward method calls."""
        hello = self._receive()
        if "failed" in hello:
            raise ProgramFailed(
                f"the program stopped before the tests completed: {hello['failed']}"
            )
        if not isinstance(hello.get("exports"), list):
            raise ProgramFailed("the program broke the channel's protocol")
        return {
            str(name): self._class(str(name)) if kind == "class" else self._function(str(name))
            for name, kind in hello["exports"]
        }

    def call(
        self,
        target: dict[str, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        want: str = "value",
    ) -> Any:
        """Send one call, wait for its reply: its "value" (or "handle", as `want` says), or the
        program's exception raised here."""
        sent = list(args)
        try:
            request = {
                **target,
                "args": encode(sent),
                "kwargs": {k: encode(v) for k, v in kwargs.items()},
            }
        except NonPlainValue as exc:
            raise SharedStateNeeded(f"an argument is {exc}") from None
        send(self.channel, request)
        reply = self._receive()
        if "raised" in reply:
            raise _rebuilt(*reply["raised"])
        try:
            if "args" in reply:
                _write_back(sent, decode(reply["args"]))
            if want == "handle" and type(reply["handle"]) is not int:
                raise ValueError("a handle that is not an int")
            return reply["handle"] if want == "handle" else decode(reply["value"])
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise ProgramFailed(f"the program broke the channel's protocol: {exc}") from None

    def _receive(self) -> dict[str, Any]:
        try:
            message = receive(self.channel)
        except (ConnectionError, ValueError, RecursionError) as exc:
            raise ProgramFailed(f"the program broke the channel's protocol: {exc}") from None
        if message is None:
            raise ProgramFailed("the program exited before the tests completed")
        if type(message) is not dict:
            raise ProgramFailed("the program broke the channel's protocol")
        return message

    def _function(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            return self.call({"call": name}, args, kwargs)

        call.__name__ = call.__qualname__ = name
        return call

    def _class(self, name: str) -> type:
        remote = self

        def __init__(instance: Any, *args: Any, **kwargs: Any) -> None:
            handle = remote.call({"call": name}, args, kwargs, want="handle")
            object.__setattr__(instance, "_handle", handle)

        def __getattr__(instance: Any, attribute: str) -> Any:
            if attribute.startswith("__") or attribute == "_handle":
                raise AttributeError(attribute)
            handle = object.__getattribute__(instance, "_handle")

            def method(*args: Any, **kwargs: Any) -> Any:
                return remote.call({"method": attribute, "handle": handle}, args, kwargs)

            method.__name__ = attribute
            return method

        return type(name, (), {"__init__": __init__, "__getattr__": __getattr__})


def _write_back(sent: list[Any], after: Any) -> None:
    """Update the tests' list, dict and set arguments in place to the program's versions."""
    if type(after) is not list or len(after) != len(sent):
        raise ValueError("arguments sent back do not match those sent")
    for old, new in zip(sent, after):
        if type(old) is list and type(new) is list:
            old[:] = new
        elif type(old) in (dict, set) and type(new) is type(old):
            old.clear()
            old.update(new)


def _rebuilt(kind: Any, message: Any) -> BaseException:
    """The exception to raise in the tests for one the program raised."""
    if type(kind) is not str or type(message) is not str:
        return ProgramFailed("the program broke the channel's protocol")
    builtin = getattr(builtins, kind, None)
    if (
        isinstance(builtin, type)
        and issubclass(builtin, Exception)
        and not issubclass(builtin, _CONTROL_FLOW)
    ):
        try:
            return builtin(message)
        except TypeError:  # one whose constructor takes other arguments (UnicodeDecodeError)
            pass
    return ProgramError(f"{kind}: {message}")
