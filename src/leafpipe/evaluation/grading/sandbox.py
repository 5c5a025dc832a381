"""Run one untrusted Python program (a model's generated code) in its own, limited process.

Every program runs under a small supervisor (`sandbox_supervisor.py`, run as a script with
`python -I -S`), started by the caller in a new session. The supervisor is single-threaded, so it
can fork and set up the child before exec (what a `preexec_fn` does) safely; subprocess's own
`preexec_fn` may deadlock in a caller with threads, and `run_many` is one. It is also the
program's parent, so a program killing its parent never hits the caller. It sets up what the
program may not undo (`sandbox_supervisor`'s docstring lists it): its own network namespace,
another user, private scratch directories and /proc, rlimits, a wall clock, an empty working
directory and a minimal environment.

The program runs as `python -s -P main.py`: `-I` minus `-E`, i.e. no user site directory and no
script directory on sys.path, but PYTHON* variables honoured. They are all ours (the
environment is built from scratch), and `-E` would discard PYTHONHASHSEED, making hashing and so
set iteration order differ between runs. Site-packages stay importable (no `-S`), so a test may
use installed packages.

The caller reads stdout/stderr incrementally and keeps at most `Limits.output_bytes` of each;
past that it closes the pipe (the program's next write fails) and the run is "failed" and
`truncated`. stdin is fed from a string.

Not isolated: the file system is readable as for any unprivileged user (world-readable files,
the repository's included), and world-writable directories other than the four above stay
writable, within RLIMIT_FSIZE per file (total disk use, the working directory's included, is
not bounded); not as root, /tmp and the rest are shared with the caller as they are; Unix-domain
sockets on the file system stay reachable where their permissions allow; there is no seccomp
filter. This keeps accidents and ordinary misbehaviour of generated code contained; it is not a
boundary against a determined attacker with kernel exploits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from leafpipe.evaluation.grading import sandbox_supervisor
from leafpipe.evaluation.grading.sandbox_supervisor import SANDBOX_UID_BASE, Limits, kill_group

__all__ = ["SANDBOX_UID_BASE", "Limits", "RunResult", "parallel_map", "run_many", "run_python"]

Status = Literal["ok", "failed", "timeout", "error"]

# How long past the wall limit the caller waits for the supervisor (its start and clean-up).
_SUPERVISOR_GRACE_S = 10.0
# Once the supervisor is gone, how long to wait for the output pipes to close.
_DRAIN_S = 1.0
_CHUNK = 65536
# Holds the leafpipe package.
_SOURCE_ROOT = str(Path(os.path.realpath(__file__)).parents[3])
_SUPERVISOR = os.path.abspath(sandbox_supervisor.__file__)
R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class RunResult:
    """How a program ended. `status` is "ok" only for exit code 0 within every limit.

    "failed": non-zero exit, a signal, output over the limit or the supervisor killed by the
    program; "timeout": wall clock or CPU time exceeded; "error": the sandbox itself could not
    run the program (then `message` says why). `returncode` is the program's exit code (negative:
    the signal), None when unknown. `wall_s` covers the whole run, supervisor included.
    """

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    truncated: bool
    network_isolated: bool
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_python(
    source: str, *, stdin: str = "", limits: Limits = Limits(), pass_fds: Sequence[int] = ()
) -> RunResult:
    """Run `source` as a Python program in the sandbox (see the module docstring); wait for it.

    `pass_fds`: descriptors handed over to the program (it inherits them under the same numbers;
    `isolated_tests` connects two programs so). Handed over means closed here once the supervisor
    holds them, started or not, so that the program's exit is the other end's end of file.
    """
    start = time.monotonic()
    box = tempfile.mkdtemp(prefix="leafpipe-sandbox-")
    try:
        return _run_in(box, source, stdin, limits, start, tuple(pass_fds))
    finally:
        _remove_tree(box)


def run_many(
    sources: Sequence[str],
    *,
    stdins: Sequence[str] | None = None,
    limits: Limits = Limits(),
    workers: int | None = None,
) -> list[RunResult]:
    """`run_python` over many programs, `workers` at a time; results in the order of `sources`."""
    if stdins is not None and len(stdins) != len(sources):
        raise ValueError(f"{len(sources)} programs but {len(stdins)} stdins")
    inputs = [""] * len(sources) if stdins is None else list(stdins)
    jobs = list(zip(sources, inputs))
    return parallel_map(
        lambda job: run_python(job[0], stdin=job[1], limits=limits), jobs, workers=workers
    )


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = None
) -> list[R]:
    """`[fn(x) for x in items]` on a thread pool, for calls that mostly wait on sandboxed processes.

    Default workers: the usable CPUs, at most 8. Each program may hold `Limits.memory_mb` of
    address space, so workers times that should fit the machine.
    """
    workers = workers or min(8, len(os.sched_getaffinity(0)))
    if workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


# --- caller side -----------------------------------------------------------------------------


def _program_env(home: str) -> dict[str, str]:
    """The program's whole environment: nothing is inherited, so no secret can leak through it."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUTF8": "1",
        # Native thread pools would each take threads from the process limit.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _run_in(
    box: str, source: str, stdin: str, limits: Limits, start: float, pass_fds: tuple[int, ...]
) -> RunResult:
    """Lay out `box` (root of the run: main.py and the empty working dir), supervise, interpret."""
    try:
        program, work = _lay_out(box, source)
        report_r, report_w = os.pipe()
        try:
            proc = _start_supervisor(
                _supervisor_config(report_w, program, work, box, limits), work, pass_fds
            )
        except OSError as exc:
            os.close(report_r)
            return RunResult(
                "error",
                None,
                "",
                "",
                time.monotonic() - start,
                False,
                False,
                f"cannot start: {exc}",
            )
        finally:
            os.close(report_w)
    finally:
        for fd in pass_fds:  # handed over: the supervisor holds its own copies
            os.close(fd)
    try:
        stdout, stderr, report, truncated, overdue = _pump(
            proc,
            report_r,
            stdin.encode("utf-8", "surrogatepass"),
            limits,
            start + limits.wall_s + _SUPERVISOR_GRACE_S,
        )
    finally:
        os.close(report_r)
    events = [
        json.loads(line)
        for line in report.decode("utf-8", "replace").splitlines()
        if line.startswith("{")
    ]
    started = next((e for e in events if e["event"] == "started"), None)
    _end_supervisor(proc, overdue, started)
    status, returncode, message = _interpret(events, proc.returncode, overdue, truncated, limits)
    return RunResult(
        status,
        returncode,
        stdout.decode("utf-8", "replace"),
        stderr.decode("utf-8", "replace"),
        time.monotonic() - start,
        truncated,
        bool(started and started["network_isolated"]),
        message,
    )


def _lay_out(box: str, source: str) -> tuple[str, str]:
    """Write the program into `box` and make its empty working directory; their paths."""
    os.chmod(box, 0o711)  # the sandbox user may pass through but not list it
    program, work = os.path.join(box, "main.py"), os.path.join(box, "work")
    with open(program, "wb") as fh:
        fh.write(source.encode("utf-8", "surrogatepass"))
    os.chmod(program, 0o644)
    os.mkdir(work)
    return program, work


def _supervisor_config(
    report_fd: int, program: str, work: str, box: str, limits: Limits
) -> dict[str, Any]:
    """What the supervisor reads from its command line (`sandbox_supervisor._main`)."""
    return {
        "report_fd": report_fd,
        "program": program,
        "work": work,
        "box": box,
        "python": sys.executable,
        # Directories the program's user must be able to enter: the interpreter, the venv, the box,
        # and leafpipe's own source (an editable checkout in /tmp would otherwise vanish under the
        # private /tmp, for a program that imports it: read-only, as it is outside /tmp).
        "expose": sorted(
            {
                os.path.realpath(p)
                for p in (
                    sys.prefix,
                    sys.base_prefix,
                    box,
                    _SOURCE_ROOT,
                    os.path.dirname(os.path.realpath(sys.executable)),
                )
            }
        ),
        "limits": dataclasses.asdict(limits),
    }


def _start_supervisor(
    config: dict[str, Any], work: str, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start the supervisor script in a session of its own; raises OSError when it cannot.

    `pass_fds` go on to the program: the supervisor leaves them inheritable."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", _SUPERVISOR, json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=work,
        env=_program_env(work),
        pass_fds=(config["report_fd"], *pass_fds),
        start_new_session=True,
    )


def _end_supervisor(
    proc: subprocess.Popen[bytes], overdue: bool, started: dict[str, Any] | None
) -> None:
    """Make sure the supervisor, and if it failed its program's group, are gone and reaped."""
    if overdue:
        kill_group(proc.pid)
    try:
        proc.wait(timeout=_DRAIN_S)
    except subprocess.TimeoutExpired:  # it closed its report yet lingers
        kill_group(proc.pid)
        proc.wait()
    if (overdue or proc.returncode != 0) and started is not None:
        # The supervisor hung or died before its clean-up (only a program running as the caller's
        # user can do that to it): kill the program's group from here, the best that is left.
        kill_group(started["pid"])


def _pump(
    proc: subprocess.Popen[bytes], report_fd: int, stdin: bytes, limits: Limits, deadline: float
) -> tuple[bytes, bytes, bytes, bool, bool]:
    """Feed stdin and collect bounded stdout/stderr and the supervisor's report until all close.

    Returns stdout, stderr, report, whether output was cut, whether `deadline` passed first.
    """
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    pipes = {proc.stdout.fileno(): proc.stdout, proc.stderr.fileno(): proc.stderr}
    kept: dict[int, bytearray] = {fd: bytearray() for fd in pipes}
    report = bytearray()
    for fd in (*kept, report_fd):
        sel.register(fd, selectors.EVENT_READ)
    stdin_fd, sent = proc.stdin.fileno(), 0
    if stdin:
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    truncated, overdue = False, False
    with sel:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Output still open after the supervisor left is not overdue.
                overdue = report_fd in sel.get_map()
                break
            for key, _ in sel.select(remaining):
                fd = key.fd
                if fd == stdin_fd:
                    sent = _feed(proc, sel, stdin_fd, stdin, sent)
                    continue
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    sel.unregister(fd)
                    if fd == report_fd:  # the supervisor is exiting: its processes are gone
                        deadline = min(deadline, time.monotonic() + _DRAIN_S)
                elif fd == report_fd:
                    report += chunk
                elif not _keep(kept[fd], chunk, limits.output_bytes):
                    # Closing our end makes the program's next write fail (EPIPE) instead
                    # of letting it fill memory or spin until the wall clock.
                    truncated = True
                    sel.unregister(fd)
                    pipes[fd].close()
    if not proc.stdin.closed:
        proc.stdin.close()
    for pipe in pipes.values():
        pipe.close()
    out, err = kept.values()
    return bytes(out), bytes(err), bytes(report), truncated, overdue


def _feed(
    proc: subprocess.Popen[bytes],
    sel: selectors.BaseSelector,
    stdin_fd: int,
    stdin: bytes,
    sent: int,
) -> int:
    """Write the next chunk of stdin; once all is sent, close it. Returns the bytes sent so far."""
    assert proc.stdin is not None
    try:
        sent += os.write(stdin_fd, stdin[sent : sent + _CHUNK])
    except BrokenPipeError:  # the program stopped reading: the rest is not wanted
        sent = len(stdin)
    if sent >= len(stdin):
        sel.unregister(stdin_fd)
        proc.stdin.close()
    return sent


def _keep(buf: bytearray, chunk: bytes, limit: int) -> bool:
    """Append to `buf` what fits within `limit` bytes; whether all of `chunk` fit."""
    room = limit - len(buf)
    buf += chunk[:room]
    return len(chunk) <= room


def _interpret(
    events: list[dict[str, Any]],
    supervisor_rc: int | None,
    overdue: bool,
    truncated: bool,
    limits: Limits,
) -> tuple[Status, int | None, str]:
    """Status, program exit code and message from the supervisor's report and fate."""
    errors = [e["message"] for e in events if e["event"] == "error"]
    if errors:
        return "error", None, "sandbox error: " + "; ".join(errors)
    exited = next((e for e in events if e["event"] == "exited"), None)
    if overdue:
        return "timeout", None, "the sandbox supervisor did not finish in time and was killed"
    if exited is None:
        if supervisor_rc is not None and supervisor_rc < 0:
            return (
                "failed",
                None,
                f"the sandbox supervisor was killed by {_signal_name(-supervisor_rc)}",
            )
        return (
            "error",
            None,
            f"the sandbox supervisor exited with code {supervisor_rc} without a report",
        )
    rc = exited["returncode"]
    if exited["timed_out"]:
        return "timeout", rc, f"wall-clock limit of {limits.wall_s:g} s exceeded"
    if exited["cpu_s"] >= math.ceil(limits.cpu_s) or rc == -signal.SIGXCPU:
        return "timeout", rc, f"CPU time limit of {math.ceil(limits.cpu_s)} s exceeded"
    if truncated:
        return "failed", rc, f"output limit of {limits.output_bytes} bytes exceeded"
    if rc != 0:
        return "failed", rc, f"killed by {_signal_name(-rc)}" if rc < 0 else f"exit code {rc}"
    return "ok", rc, ""


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _remove_tree(path: str) -> None:
    """Remove the run's directory even if the program took its permissions away.

    Root needs no permissions, but not as root the program runs as the caller's user and may
    have chmod-ed directories to 0: give them back first. Symlinks are never followed (chmod
    would follow one out of the box).
    """
    os.chmod(path, 0o700)
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            sub = os.path.join(root, name)
            if stat.S_ISDIR(os.lstat(sub).st_mode):
                os.chmod(sub, 0o700)
    shutil.rmtree(path, ignore_errors=True)
