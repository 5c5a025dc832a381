"""The sandbox's supervisor: the script that isolates one program, runs it and cleans up.

`sandbox.run_python` starts this file as a script, `python -I -S sandbox_supervisor.py CONFIG`, in
a new session. Run that way it sees neither site-packages nor the leafpipe package, so it imports
the standard library only, and `Limits`, which it reads from its config, lives here for `sandbox`
to import. It sets up what the program may not undo:

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
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import os
import resource
import select
import signal
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

# Sandbox uids are this plus the supervisor's pid (pid_max is at most 2**22): far above the uids
# of real accounts and below 2**31, so tools that read uids as signed ints still work.
SANDBOX_UID_BASE = 2_000_000_000
# How long the supervisor keeps killing and reaping leftover processes after the program ends.
_REAP_S = 5.0
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
# World-writable directories every process shares: as root each run gets empty ones of its own.
_SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


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


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- isolating and running the program ----------------------------------------------------


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
    kill_group(child)
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
