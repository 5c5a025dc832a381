"""Run one untrusted Python program (a model's generated code) in its own, limited process.

Every program runs under a small supervisor (this file, run as a script with `python -I -S`),
started by the caller in a new session. The supervisor is single-threaded, so it can fork and set
up the child before exec (what a `preexec_fn` does) safely; subprocess's own `preexec_fn` may
deadlock in a caller with threads, and `run_many` is one. It is also the program's parent, so a
program killing its parent never hits the caller. It sets up what the program may not undo:

- its own **network namespace** (`unshare(CLONE_NEWNET)`): only a loopback interface that is
  down, so no connection to anything, 127.0.0.1 included, and no name resolution through DNS.
  Creating a namespace needs CAP_SYS_ADMIN (root, outside restrictive containers); without it
  the program runs *with* the network and `RunResult.network_isolated` is False.
- **another user**: as root (root ignores RLIMIT_NPROC, so a fork bomb would take the machine
  down) the program runs as a uid/gid of its own, `SANDBOX_UID_BASE` + the supervisor's pid, with
  no supplementary groups and `no_new_privs` (setuid binaries cannot raise it back). One uid per
  run, rather than a shared `nobody`, keeps concurrent runs apart: their process counts, their
  signals (a program cannot kill another's processes) and their clean-up, which kills every
  process of that uid at once (`kill(-1)` from that uid is atomic, so fork bombs cannot outrun
  it). As root the supervisor also takes a private mount namespace (see the next point). When
  the interpreter lives under a directory that other users cannot enter (pyenv under /root), it
  shows such a directory to the program as an empty tmpfs holding only the way to the
  interpreter; its other contents are hidden.
  Not as root the program runs as the caller's user: then RLIMIT_NPROC counts all that user's
  processes, the program can signal its supervisor (the run then ends as "failed") and every
  other process of that user, the caller included (`kill(-1)`), read that user's processes'
  /proc entries (their environment, cwd and open files) and, in principle, read or alter
  anything the user can.
- **private scratch and /proc** (as root, in that mount namespace): /tmp, /var/tmp, /dev/shm
  and /run/lock are each an empty tmpfs of the run's own (mode 1777, at most `Limits.file_mb`
  and 4096 inodes each), holding only the box bind-mounted back. So a program sees none of the
  host's files there (other runs' boxes, logs, the caller's temporary files), cannot alter them,
  and leaves nothing for the next program: the tmpfs goes when the run's last process does.
  /proc is a fresh instance with `hidepid=2`: other users' processes, the caller and the
  supervisor included, do not show (no command lines, environments, cwd or fd links). Where the
  kernel refuses that proc mount (some containers), the host's /proc stays.
- **rlimits**: CPU seconds, address space, processes (threads count too), file size, open files,
  no core.
- **a wall clock**: on expiry, and after every run, the program's process group, every process
  of its uid and every orphan (the supervisor is a child subreaper) are killed and reaped.
- **an empty working directory**, also HOME and TMPDIR, removed afterwards whatever the program
  did to it; the program file sits one level up, so the working directory starts empty.
- **a minimal environment**: nothing from the caller's os.environ (no tokens, no PYTHONPATH).

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

import ctypes
import dataclasses
import json
import math
import os
import resource
import select
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
from typing import Any, Literal, NoReturn, TypeVar

Status = Literal["ok", "failed", "timeout", "error"]

# Sandbox uids are this plus the supervisor's pid (pid_max is at most 2**22): far above the uids
# of real accounts and below 2**31, so tools that read uids as signed ints still work.
SANDBOX_UID_BASE = 2_000_000_000
# How long past the wall limit the caller waits for the supervisor (its start and clean-up).
_SUPERVISOR_GRACE_S = 10.0
# Once the supervisor is gone, how long to wait for the output pipes to close.
_DRAIN_S = 1.0
# How long the supervisor keeps killing and reaping leftover processes after the program ends.
_REAP_S = 5.0
_CHUNK = 65536
_MIB = 1 << 20

_CLONE_NEWNS, _CLONE_NEWNET = 0x00020000, 0x40000000
_PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 36, 38
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = (
    2,
    4,
    8,
    4096,
    8192,
    16384,
    1 << 18,
)
# World-writable directories every process shares: as root each run gets empty ones of its own.
_SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_SOURCE_ROOT = str(Path(os.path.realpath(__file__)).parents[3])  # holds the leafpipe package
_SCRATCH_INODES = 4096

_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.unshare.argtypes = [ctypes.c_int]
_LIBC.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_LIBC.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]

R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """What one program may use. `cpu_s` is rounded up to whole seconds (RLIMIT_CPU's unit)."""

    wall_s: float = 10.0
    cpu_s: float = 10.0
    memory_mb: int = 2048  # address space, not resident memory
    processes: int = 64  # processes and threads of the program together
    file_mb: int = 16  # largest file the program may write; as root also the size of its /tmp
    open_files: int = 256  # file descriptors open at once (at most the caller's own hard limit)
    output_bytes: int = 1_000_000  # kept of stdout and of stderr, each

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(
                    f"Limits.{field.name} must be positive, got {getattr(self, field.name)!r}"
                )


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


def run_python(source: str, *, stdin: str = "", limits: Limits = Limits()) -> RunResult:
    """Run `source` as a Python program in the sandbox (see the module docstring) and wait for it."""
    start = time.monotonic()
    box = tempfile.mkdtemp(prefix="leafpipe-sandbox-")
    try:
        return _run_in(box, source, stdin, limits, start)
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


def _run_in(box: str, source: str, stdin: str, limits: Limits, start: float) -> RunResult:
    """Lay out `box` (root of the run: main.py and the empty working dir), supervise, interpret."""
    os.chmod(box, 0o711)  # the sandbox user may pass through but not list it
    program, work = os.path.join(box, "main.py"), os.path.join(box, "work")
    with open(program, "wb") as fh:
        fh.write(source.encode("utf-8", "surrogatepass"))
    os.chmod(program, 0o644)
    os.mkdir(work)
    report_r, report_w = os.pipe()
    config = {
        "report_fd": report_w,
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
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=work,
            env=_program_env(work),
            pass_fds=(report_w,),
            start_new_session=True,
        )
    except OSError as exc:
        os.close(report_r)
        return RunResult(
            "error", None, "", "", time.monotonic() - start, False, False, f"cannot start: {exc}"
        )
    finally:
        os.close(report_w)
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
    if overdue:
        _kill_group(proc.pid)
    try:
        proc.wait(timeout=_DRAIN_S)
    except subprocess.TimeoutExpired:  # it closed its report yet lingers
        _kill_group(proc.pid)
        proc.wait()
    if (overdue or proc.returncode != 0) and started is not None:
        # The supervisor hung or died before its clean-up (only a program running as the caller's
        # user can do that to it): kill the program's group from here, the best that is left.
        _kill_group(started["pid"])
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


def _pump(
    proc: subprocess.Popen[bytes], report_fd: int, stdin: bytes, limits: Limits, deadline: float
) -> tuple[bytes, bytes, bytes, bool, bool]:
    """Feed stdin and collect bounded stdout/stderr and the supervisor's report until all close.

    Returns stdout, stderr, report, whether output was cut, whether `deadline` passed first.
    """
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    kept: dict[int, bytearray] = {
        proc.stdout.fileno(): bytearray(),
        proc.stderr.fileno(): bytearray(),
    }
    pipes = {proc.stdout.fileno(): proc.stdout, proc.stderr.fileno(): proc.stderr}
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
                overdue = (
                    report_fd in sel.get_map()
                )  # output still open after the supervisor left is not
                break
            for key, _ in sel.select(remaining):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        sent += os.write(fd, stdin[sent : sent + _CHUNK])
                    except BrokenPipeError:  # the program stopped reading: the rest is not wanted
                        sent = len(stdin)
                    if sent >= len(stdin):
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    sel.unregister(fd)
                    if fd == report_fd:  # the supervisor is exiting: its processes are gone
                        deadline = min(deadline, time.monotonic() + _DRAIN_S)
                elif fd == report_fd:
                    report += chunk
                else:
                    buf = kept[fd]
                    room = limits.output_bytes - len(buf)
                    buf += chunk[:room]
                    if len(chunk) > room:
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


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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


# --- supervisor side (this file run as a script) ---------------------------------------------


def _supervise(config: dict[str, Any], send: Callable[..., None]) -> None:
    """Isolate, start the program, wait for it within the wall clock, kill whatever is left."""
    limits = Limits(**config["limits"])
    uid = SANDBOX_UID_BASE + os.getpid() if os.geteuid() == 0 else None
    try:
        _check(_LIBC.unshare(_CLONE_NEWNET))
        network_isolated = True
    except OSError:
        network_isolated = False
    if uid is not None:
        os.chown(config["work"], uid, uid)
        _check(_LIBC.unshare(_CLONE_NEWNS))
        _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we mount may reach the host
        if any(_blocked(path) for path in config["expose"]):
            _expose(config["expose"], os.path.join(config["box"], "stage"))
        _private_scratch(config["expose"], limits.file_mb)
        _private_proc()
    # Orphans of the program become our children, so none escapes the clean-up by daemonising.
    _check(_LIBC.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
    child = os.fork()
    if child == 0:
        _exec_program(config, limits, uid, send)
    send(event="started", pid=child, uid=uid, network_isolated=network_isolated)
    timed_out = not _wait_exit(child, limits.wall_s)
    if timed_out:
        os.kill(child, signal.SIGKILL)
    _, status, usage = os.wait4(child, 0)
    _kill_group(child)
    if uid is not None:
        _kill_uid(uid)
    _reap_all(time.monotonic() + _REAP_S)
    send(
        event="exited",
        returncode=os.waitstatus_to_exitcode(status),
        timed_out=timed_out,
        cpu_s=usage.ru_utime + usage.ru_stime,
    )


def _exec_program(
    config: dict[str, Any], limits: Limits, uid: int | None, send: Callable[..., None]
) -> NoReturn:
    """In the forked child: limits, then the sandbox user, then exec. Never returns."""
    try:
        os.setsid()  # its own session and group: the program can kill only its own group
        _check(_LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        cpu = math.ceil(limits.cpu_s)
        files = min(
            limits.open_files, resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        )  # only root may raise its own
        # Soft CPU limit sends SIGXCPU; the hard one, a second later, SIGKILL. Others: soft = hard,
        # so the program cannot raise them.
        for res, soft, hard in (
            (resource.RLIMIT_CPU, cpu, cpu + 1),
            (resource.RLIMIT_AS, limits.memory_mb * _MIB, limits.memory_mb * _MIB),
            (resource.RLIMIT_NPROC, limits.processes, limits.processes),
            (resource.RLIMIT_FSIZE, limits.file_mb * _MIB, limits.file_mb * _MIB),
            (resource.RLIMIT_NOFILE, files, files),
            (resource.RLIMIT_CORE, 0, 0),
        ):
            resource.setrlimit(res, (soft, hard))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        os.chdir(config["work"])
        # Python ignores these two; give the program the defaults, as subprocess does.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        python = config["python"]
        os.execve(python, [python, "-s", "-P", config["program"]], os.environ)
    except BaseException as exc:
        send(event="error", message=f"cannot start the program: {type(exc).__name__}: {exc}")
    finally:
        os._exit(127)


def _wait_exit(pid: int, timeout_s: float) -> bool:
    """Whether child `pid` exited within `timeout_s` (it is left to be reaped)."""
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    finally:
        os.close(fd)


def _kill_uid(uid: int) -> None:
    """Kill every process of `uid` in one go: kill(-1) sent as that uid reaches exactly those.

    The kernel delivers it under the task-list lock, so a fork bomb cannot fork past it.
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        except BaseException:
            pass  # ESRCH: nothing left to kill
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _reap_all(deadline: float) -> None:
    """Kill and reap all our remaining children (orphans reparented to us) until none are left."""
    children = f"/proc/self/task/{os.getpid()}/children"
    while time.monotonic() < deadline:
        with open(children) as fh:
            for pid in fh.read().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.005)
        except ChildProcessError:
            return


def _blocked(path: str) -> str | None:
    """The first directory on the way to `path` (itself included) that others cannot enter."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/" + "/".join(parts[:i])
        if not os.stat(prefix).st_mode & stat.S_IXOTH:
            return prefix
    return None


def _expose(paths: Sequence[str], staging: str) -> None:
    """Make `paths` reachable for the sandbox user within our private mount namespace.

    Each blocking directory is covered by a tmpfs (mode 0755) into which only the entries on the
    way to `paths` are bind-mounted back; its other contents stay hidden. Repeats one level
    deeper while something still blocks.
    """
    os.mkdir(staging, 0o700)
    for _ in range(64):
        wanted: dict[str, set[str]] = {}
        for path in paths:
            block = _blocked(path)
            if block == path:
                raise PermissionError(f"{path} itself is not accessible to other users")
            if block is not None:
                wanted.setdefault(block, set()).add(path[len(block) :].strip("/").split("/")[0])
        if not wanted:
            return
        for block, names in wanted.items():
            stages = []
            for name in sorted(names):
                stage = os.path.join(staging, str(len(os.listdir(staging))))
                os.mkdir(stage)
                _mount(os.path.join(block, name), stage, None, _MS_BIND | _MS_REC)
                stages.append((name, stage))
            _mount("tmpfs", block, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
            for name, stage in stages:
                os.mkdir(os.path.join(block, name))
                _mount(stage, os.path.join(block, name), None, _MS_MOVE)
    raise RuntimeError(f"could not expose {paths}")


def _private_scratch(keep: Sequence[str], size_mb: int) -> None:
    """Cover each of `_SCRATCH` with an empty tmpfs; `keep`'s directories under one (the box, a
    venv in /tmp) are bind-mounted back at the same path, through descriptors opened before."""
    for scratch in sorted({os.path.realpath(d) for d in _SCRATCH if os.path.isdir(d)} - set(keep)):
        inside = [p for p in keep if p.startswith(scratch + "/")]
        inside = [
            p for p in inside if not any(p.startswith(q + "/") for q in inside)
        ]  # outermost only
        fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in inside]
        umask = os.umask(0o022)  # the directories on the way must be passable for the sandbox user
        try:
            _mount(
                "tmpfs",
                scratch,
                "tmpfs",
                _MS_NOSUID | _MS_NODEV,
                f"mode=1777,size={size_mb}m,nr_inodes={_SCRATCH_INODES}",
            )
            for path, fd in zip(inside, fds):
                os.makedirs(path)
                _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC)
        finally:
            os.umask(umask)
            for fd in fds:
                os.close(fd)


def _private_proc() -> None:
    """A /proc of our own in which processes of other users do not show (root sees them all)."""
    try:
        _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "hidepid=2")
    except OSError:
        pass  # the kernel allows no new proc here (a container's masked /proc): keep the host's


def _mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else s.encode()

    _check(_LIBC.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), target)


def _check(rc: int, what: str = "") -> None:
    """Raise the C library's errno as OSError when a call returned -1."""
    if rc == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), what or None)


def _main(argv: Sequence[str]) -> int:
    """Supervisor entry point: argv[1] is the JSON config from `_run_in`."""
    config = json.loads(argv[1])
    report_fd = config["report_fd"]
    os.set_inheritable(report_fd, False)  # the program must not be able to write a report

    def send(**event: Any) -> None:
        os.write(report_fd, (json.dumps(event) + "\n").encode())

    try:
        _supervise(config, send)
    except Exception as exc:
        send(event="error", message=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
