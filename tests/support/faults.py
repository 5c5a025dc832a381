"""Fault injection for the tests: run `leafpipe` in a child process and SIGKILL it at a chosen
progress point, or cap the size of the files it may write.

Run as a script (`python tests/support/faults.py STAGE ...`) this is the `leafpipe` command line.
With `LEAFPIPE_TEST_KILL_AT_PUBLISH=K:before` (or `K:after`) set, the process SIGKILLs itself just
before (after) its K-th publish: the rename of an atomic write's temporary onto its target; with
`PATH:before`, just before it publishes PATH.

`Forker` runs such commands without paying torch's and transformers' imports (some 6 s of CPU)
each time: a server process imports the command line once and forks one child per command; the
child, a process of its own, runs `leafpipe.cli.main(argv)` and is killed like any other.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KILL_AT_PUBLISH = "LEAFPIPE_TEST_KILL_AT_PUBLISH"
_TEMP = re.compile(r"^\..+\.tmp-")  # leafpipe.files.atomic's temporaries: .{name}.tmp-...


def is_temporary(path: str | os.PathLike[str]) -> bool:
    return bool(_TEMP.match(Path(path).name))


def is_publish(src: Any, dst: Any) -> bool:
    """An atomic write's last step: its temporary renamed onto the real target."""
    return is_temporary(src) and not is_temporary(dst)


def temporaries(root: Path) -> list[Path]:
    """Every atomic-write temporary under `root`: what a killed or failed write could leave."""
    return sorted(p for p in root.rglob(".*") if is_temporary(p))


def leafpipe_argv(stage: str, args: dict[str, Any], configfile: Path) -> list[str]:
    """The command-line arguments of `stage` with `args` (stage parameters) as its options."""
    flags = [x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return [stage, "--configfile", str(configfile), *flags]


def child_env(**extra: str) -> dict[str, str]:
    """Offline, no bytecode files (which a file-size limit would hit), and a progress bar that
    prints every update, so the parent can count them."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TQDM_MININTERVAL": "0",
        "TQDM_MINITERS": "1",
        **extra,
    }


@dataclass
class Outcome:
    returncode: int
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


def progress(stderr: str, desc: str) -> int:
    """The highest count a tqdm bar whose description matches the regex `desc` has printed."""
    counts = re.findall(rf"{desc}:[^\r\n|]*\|[^\r\n|]*\|\s*(\d+)/\d+", stderr)
    return max(map(int, counts), default=0)


def _watch(fd: int, pid: int, kill_at: tuple[str, int] | None, timeout: float) -> str:
    """Read a child's stderr from `fd` to its end; SIGKILL the child once its progress bar
    `kill_at[0]` reaches `kill_at[1]`, or after `timeout` seconds."""
    timer = threading.Timer(timeout, os.kill, (pid, signal.SIGKILL))
    timer.start()
    chunks: list[bytes] = []
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            if (
                kill_at is not None
                and progress(b"".join(chunks).decode(errors="replace"), kill_at[0]) >= kill_at[1]
            ):
                os.kill(pid, signal.SIGKILL)
                kill_at = None
    finally:
        timer.cancel()
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 120,
) -> Outcome:
    """Run `leafpipe argv` as a new Python process."""
    proc = subprocess.Popen(
        [sys.executable, __file__, *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=preexec_fn,
    )
    assert proc.stderr is not None
    stderr = _watch(os.dup(proc.stderr.fileno()), proc.pid, None, timeout)
    proc.stderr.close()
    return Outcome(proc.wait(), stderr)


class Forker:
    """A server that has imported the command line and forks a child per command (see above)."""

    def __init__(self) -> None:
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--fork-server", str(theirs.fileno())],
            env=child_env(),
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()

    def run(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        kill_at: tuple[str, int] | None = None,
        timeout: float = 120,
    ) -> Outcome:
        """Run `leafpipe argv` in a forked child with `env` added to its environment; with
        `kill_at=(desc, k)`, SIGKILL it once its progress bar `desc` reaches k."""
        read, write = os.pipe()
        request = json.dumps({"argv": list(argv), "env": env or {}}).encode()
        socket.send_fds(self._sock, [request], [write])
        os.close(write)  # the child holds the only write end: its exit ends the stream
        pid = json.loads(self._sock.recv(1 << 16))["pid"]
        stderr = _watch(read, pid, kill_at, timeout)
        return Outcome(json.loads(self._sock.recv(1 << 16))["returncode"], stderr)

    def close(self) -> None:
        self._sock.close()  # the server reads end-of-stream and exits
        self._proc.wait(timeout=30)


def _serve(fd: int) -> None:
    from transformers import LlamaForCausalLM  # noqa: F401

    import leafpipe.cli  # noqa: F401 (the imports each child would otherwise pay for)
    import leafpipe.detect.scoring  # noqa: F401
    import leafpipe.distill.trainer  # noqa: F401
    import leafpipe.evaluation.generation  # noqa: F401

    sock = socket.socket(fileno=fd)
    while True:
        try:
            request, fds, _, _ = socket.recv_fds(sock, 1 << 16, 1)
        except ConnectionError:
            return
        if not request:
            return
        pid = os.fork()
        if pid == 0:
            _child(json.loads(request), fds[0], sock)
        os.close(fds[0])
        sock.send(json.dumps({"pid": pid}).encode())
        returncode = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        sock.send(json.dumps({"returncode": returncode}).encode())


def _child(request: dict[str, Any], stderr_fd: int, server: socket.socket) -> None:
    """In the forked child: stderr to the parent's pipe, no stdin or stdout, run, exit."""
    code = 1
    try:
        server.close()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(stderr_fd, 2)
        os.environ.update(request["env"])
        if os.environ.get(KILL_AT_PUBLISH):
            _kill_at_publish(os.environ[KILL_AT_PUBLISH])
        from leafpipe.cli import main

        code = main(request["argv"])
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def limit_file_size(max_bytes: int) -> Callable[[], None]:
    """A preexec_fn: files may not grow past `max_bytes`, and a write beyond fails with EFBIG
    (SIGXFSZ, which would kill the process instead, is ignored)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


def spy_publishes(monkeypatch: Any) -> list[Path]:
    """Record, in this process, the target of every publish from now on (in order)."""
    published: list[Path] = []
    real = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if is_publish(src, dst):
            published.append(Path(dst))
        real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return published


def _kill_at_publish(spec: str) -> None:
    """`spec` is `K:when` (the K-th publish) or `PATH:when` (the publish of PATH)."""
    what, _, when = spec.rpartition(":")
    real, seen = os.replace, 0

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal seen
        seen += is_publish(src, dst)
        hit = is_publish(src, dst) and (
            seen == int(what) if what.isdigit() else Path(dst) == Path(what)
        )
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst, *args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fork-server"]:
        _serve(int(sys.argv[2]))
        sys.exit(0)
    if os.environ.get(KILL_AT_PUBLISH):
        _kill_at_publish(os.environ[KILL_AT_PUBLISH])
    from leafpipe.cli import main

    sys.exit(main(sys.argv[1:]))
