"""The sandbox survives hostile programs and keeps their effects inside.

Every hostile program must end as "failed" or "timeout", or see nothing, while this pytest
process carries on. The fork bomb runs only after `test_process_limit_applies` has shown that the
process limit holds (as root it holds only because the program runs as another user); pytest's
definition order runs that test first. The programs aimed at this process (its environment, its
files, its /proc entries, signals, ptrace) get the `runner` fixture, which plants a secret and a
world-writable sentinel and checks afterwards that the process is as it was. What the module
docstring of leafpipe.evaluation.grading.sandbox lists as not isolated is asserted as such, not
skipped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import leafpipe
from leafpipe.evaluation.grading.sandbox import (
    SANDBOX_UID_BASE,
    Limits,
    RunResult,
    run_many,
    run_python,
)

FAST = Limits(wall_s=5.0, cpu_s=2.0, processes=32)
AS_ROOT = os.geteuid() == 0
START_CWD = os.getcwd()
ROOT_ONLY = pytest.mark.skipif(
    not AS_ROOT,
    reason="not as root the program is the caller's user: "
    "test_unprivileged_caller asserts what it can reach then",
)
REPO = Path(__file__).resolve().parents[3]
SECRET = "leafpipe-secret-5e2d9c"
DENIED = {"PermissionError", "FileNotFoundError"}
# Hostile programs record each attempt as [exception name or "ok", value] and print them as JSON.
PRELUDE = """
import json, os
seen = {}
def attempt(name, action):
    try:
        seen[name] = ["ok", action()]
    except Exception as exc:
        seen[name] = [type(exc).__name__, str(exc)]
"""


def _processes_of(uid: int) -> list[int]:
    """Pids of live (non-zombie) processes whose real uid is `uid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
            pids.append(int(entry))
    return pids


def _ended_badly(result: RunResult) -> None:
    assert result.status in ("failed", "timeout"), result
    assert not result.ok


def test_ok_program_output_and_stdin() -> None:
    result = run_python(
        "import sys\nprint(sys.stdin.read().upper(), end='')\n", stdin="hello\nworld\n"
    )
    assert result.status == "ok" and result.returncode == 0
    assert result.stdout == "HELLO\nWORLD\n" and result.stderr == ""
    assert not result.truncated and result.message == ""


def test_exit_code_and_stderr_reported() -> None:
    result = run_python("import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)\n")
    assert result.status == "failed" and result.returncode == 3
    assert result.stderr == "boom\n" and result.message == "exit code 3"


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="wall_s"):
        Limits(wall_s=0)
    with pytest.raises(ValueError, match="processes"):
        Limits(processes=-1)


def test_empty_working_directory_and_minimal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAFPIPE_TEST_SECRET", "hunter2-do-not-leak")
    result = run_python(
        "import os, json\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), "
        "'ls': os.listdir('.'),"
        " 'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups()}))\n"
    )
    assert result.ok, result
    assert "hunter2" not in result.stdout
    seen = json.loads(result.stdout)
    assert "LEAFPIPE_TEST_SECRET" not in seen["env"]
    assert set(seen["env"]) <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "PYTHONHASHSEED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUTF8",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
    }
    assert seen["env"]["HOME"] == seen["cwd"] and seen["ls"] == []
    assert not os.path.exists(seen["cwd"])  # removed after the run
    if AS_ROOT:
        assert (
            seen["uid"] >= SANDBOX_UID_BASE and seen["gid"] == seen["uid"] and seen["groups"] == []
        )


def test_hash_seed_is_fixed() -> None:
    source = "print(hash('leafpipe'))\n"
    first, second = run_python(source), run_python(source)
    assert first.ok and first.stdout == second.stdout


def test_process_limit_applies() -> None:
    """The harmless check before the fork bomb: 200 sleeps must not all start."""
    result = run_python(
        "import subprocess\nprocs = [subprocess.Popen(['sleep', '30']) for _ in range(200)]\n",
        limits=Limits(wall_s=10.0, processes=16),
    )
    assert result.status == "failed", result
    assert "BlockingIOError" in result.stderr or "Resource temporarily unavailable" in result.stderr


def test_fork_bomb_is_contained_and_cleaned_up() -> None:
    source = (
        "import os\nprint(os.getuid(), flush=True)\n"
        "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    result = run_python(source, limits=Limits(wall_s=2.0, cpu_s=2.0, processes=32))
    _ended_badly(result)
    uid = int(result.stdout.split()[0])
    if AS_ROOT:
        assert uid >= SANDBOX_UID_BASE
        assert _processes_of(uid) == []


def test_daemonised_child_is_killed() -> None:
    """A double-forked, setsid-ed grandchild escapes the process group but not the clean-up."""
    result = run_python(
        "import os, time\nr, w = os.pipe()\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        os.write(w, str(os.getpid()).encode())\n        time.sleep(60)\n    os._exit(0)\n"
        "print(os.read(r, 32).decode(), os.getuid())\n",
        limits=FAST,
    )
    assert result.ok, result
    pid, uid = map(int, result.stdout.split())
    assert pid not in _processes_of(uid)


def test_busy_loop_times_out_on_cpu() -> None:
    start = time.monotonic()
    result = run_python("while True:\n    pass\n", limits=Limits(wall_s=10.0, cpu_s=1.0))
    assert result.status == "timeout" and "CPU" in result.message, result
    assert time.monotonic() - start < 8.0


def test_sleep_times_out_on_wall_clock() -> None:
    result = run_python("import time\ntime.sleep(60)\n", limits=Limits(wall_s=1.0))
    assert result.status == "timeout" and "wall-clock" in result.message, result
    assert result.wall_s < 5.0


def test_huge_allocation_fails() -> None:
    result = run_python("block = bytearray(8 * 2**30)\nprint(len(block))\n", limits=FAST)
    _ended_badly(result)
    assert "MemoryError" in result.stderr


def test_killing_its_parent_fails_cleanly() -> None:
    result = run_python(
        "import os\nos.kill(os.getppid(), 9)\nimport time\ntime.sleep(1)\n", limits=FAST
    )
    _ended_badly(result)
    if AS_ROOT:  # the parent is the supervisor, root, out of reach of the sandbox user
        assert "PermissionError" in result.stderr
    else:  # the supervisor dies, and the run says so
        assert "supervisor was killed" in result.message


def test_killing_its_own_group_fails_cleanly() -> None:
    result = run_python(
        "import os, subprocess\nsubprocess.Popen(['sleep', '60'])\nos.killpg(0, 9)\n", limits=FAST
    )
    _ended_badly(result)
    assert result.returncode == -9


def test_cannot_write_outside() -> None:
    target = "/etc/leafpipe-test"
    assert not os.path.exists(target)
    result = run_python("open('/tmp/../etc/leafpipe-test', 'w').write('x')\n", limits=FAST)
    if not AS_ROOT:  # as the caller's own user, /etc is protected only by its permissions
        assert not os.access("/etc", os.W_OK)
    _ended_badly(result)
    assert not os.path.exists(target)


def test_no_network() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        result = run_python(
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'hi')\n",
            limits=FAST,
        )
        if not result.network_isolated:
            pytest.skip(
                "no network namespace here (needs CAP_SYS_ADMIN): the program had the network"
            )
        _ended_badly(result)
        assert "unreachable" in result.stderr
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing connected
    resolved = run_python(
        "import socket\nprint(socket.getaddrinfo('pypi.org', 443))\n", limits=FAST
    )
    assert resolved.network_isolated
    _ended_badly(resolved)


def test_flood_of_output_is_truncated_with_bounded_memory() -> None:
    limits = Limits(wall_s=10.0, output_bytes=100_000)
    tracemalloc.start()
    try:
        result = run_python(
            "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1_000_000)\n",
            limits=limits,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _ended_badly(result)
    assert result.truncated and "output limit" in result.message
    assert result.stdout == "x" * 100_000
    assert peak < 10_000_000  # the runner never held the 100 MB


def test_stderr_flood_is_truncated() -> None:
    result = run_python(
        "import sys\nwhile True:\n    sys.stderr.write('e' * 10_000)\n",
        limits=Limits(wall_s=10.0, output_bytes=50_000),
    )
    _ended_badly(result)
    assert result.truncated and len(result.stderr) <= 50_000


def test_closing_stdout_fails_cleanly() -> None:
    result = run_python(
        "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(0.2)\nprint('x')\n", limits=FAST
    )
    _ended_badly(result)
    assert result.stdout == ""


def test_locked_working_directory_is_removed() -> None:
    result = run_python(
        "import os\nos.makedirs('a/b')\nos.symlink('/etc', 'a/etc')\nos.chmod('a/b', 0)\n"
        "os.chmod('a', 0)\n"
        "os.chmod('.', 0)\nprint(os.getcwd())\n",
        limits=FAST,
    )
    assert result.ok, result
    assert not os.path.exists(result.stdout.strip())
    assert os.stat("/etc").st_mode & 0o755 == 0o755  # the symlink was not followed


def test_run_many_keeps_order() -> None:
    sources = [
        f"import time, random\ntime.sleep(random.random() / 20)\nprint(int(input()) * 100 + {i})\n"
        for i in range(12)
    ]
    results = run_many(sources, stdins=[str(i) for i in range(12)], workers=4)
    assert [r.stdout for r in results] == [f"{i * 101}\n" for i in range(12)]
    with pytest.raises(ValueError):
        run_many(sources, stdins=["1"])


@dataclass(frozen=True)
class Runner:
    """What a hostile program aims at: this process, a sentinel it owns, secrets only it may
    read."""

    pid: int
    cwd: str
    sentinel: str  # world-writable (0666) in the temp dir, holding b"sentinel"
    secrets: tuple[str, ...]  # owner-only (0600) files holding SECRET: in the temp dir and in HOME


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def _planted(directory: str, prefix: str, content: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix=prefix, dir=directory)  # mode 0600
    os.write(fd, content)
    os.close(fd)
    return path


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runner]:
    """LEAFPIPE_SECRET in os.environ and planted files; afterwards: cwd, env and sentinel
    unchanged."""
    monkeypatch.setenv("LEAFPIPE_SECRET", SECRET)
    env, cwd = _environment(), os.getcwd()
    sentinel = _planted(tempfile.gettempdir(), "leafpipe-sentinel-", b"sentinel")
    os.chmod(sentinel, 0o666)
    secrets = tuple(
        _planted(d, "leafpipe-planted-", SECRET.encode())
        for d in (tempfile.gettempdir(), Path.home())
    )
    try:
        yield Runner(os.getpid(), cwd, sentinel, secrets)
        assert os.getcwd() == cwd and _environment() == env
        assert (
            Path(sentinel).read_bytes() == b"sentinel"
            and stat.S_IMODE(os.stat(sentinel).st_mode) == 0o666
        )
        assert all(Path(s).read_text() == SECRET for s in secrets)
    finally:
        for path in (sentinel, *secrets):
            Path(path).unlink(missing_ok=True)


def _probe(body: str, limits: Limits = FAST) -> tuple[RunResult, dict[str, list[Any]]]:
    """Run PRELUDE + `body`, which fills `seen`; the secret shows in none of its output."""
    result = run_python(
        PRELUDE + body + "\nprint(json.dumps(seen, default=str), flush=True)\n", limits=limits
    )
    assert SECRET not in result.stdout + result.stderr
    seen = json.loads(result.stdout.splitlines()[-1]) if result.stdout else {}
    return result, seen


def _outcomes(seen: dict[str, list[Any]]) -> dict[str, str]:
    return {name: outcome for name, (outcome, _) in seen.items()}


def test_runners_environment_is_out_of_reach(runner: Runner) -> None:
    result, seen = _probe(f"""
attempt("os.environ", lambda: dict(os.environ))
attempt("self", lambda: open("/proc/self/environ").read())
attempt("supervisor", lambda: open(f"/proc/{{os.getppid()}}/environ").read())
attempt("runner", lambda: open("/proc/{runner.pid}/environ").read())
attempt("init", lambda: open("/proc/1/environ").read())
""")
    assert result.ok, result
    assert seen["os.environ"][0] == "ok" and "LEAFPIPE_SECRET" not in seen["os.environ"][1]
    assert seen["self"][0] == "ok" and "LEAFPIPE_SECRET" not in seen["self"][1]
    if AS_ROOT:  # hidden by the private /proc (or refused: the files are the owner's only)
        assert {seen[k][0] for k in ("supervisor", "runner", "init")} <= DENIED, seen


def _under_tmp(path: str | Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to("/tmp")


@ROOT_ONLY
def test_files_outside_its_directory_are_hidden_or_refused(runner: Runner) -> None:
    home = Path.home()
    targets = {
        "secret in temp dir": runner.secrets[0],
        "secret in home": runner.secrets[1],
        "ssh key": str(home / ".ssh" / "id_rsa"),
        "shadow": "/etc/shadow",
        "runner cmdline": f"/proc/{runner.pid}/cmdline",
        "runner maps": f"/proc/{runner.pid}/maps",
    }
    links = {
        "runner cwd": f"/proc/{runner.pid}/cwd",
        "runner root": f"/proc/{runner.pid}/root",
        "runner fd": f"/proc/{runner.pid}/fd/0",
    }
    pyproject = REPO / "pyproject.toml"
    result, seen = _probe(f"""
for name, path in {json.dumps(targets)}.items():
    attempt(name, lambda: open(path).read())
for name, path in {json.dumps(links)}.items():
    attempt(name, lambda: os.readlink(path))
attempt("home", lambda: os.listdir({str(home)!r}))
attempt("fds", lambda: os.listdir("/proc/{runner.pid}/fd"))
attempt("repo", lambda: open({str(pyproject)!r}).read())
""")
    assert result.ok, result
    outcomes = _outcomes(seen)
    assert {outcomes[name] for name in (*targets, *links, "fds")} <= DENIED, seen
    assert outcomes["home"] in DENIED or Path(runner.secrets[1]).name not in seen["home"][1]
    # Documented: what every user may read, the program may read too (the repository, here).
    world_readable = all(p.stat().st_mode & stat.S_IXOTH for p in pyproject.parents) and bool(
        pyproject.stat().st_mode & stat.S_IROTH
    )
    # A checkout under /tmp is hidden by the private /tmp (all but leafpipe's source, src/).
    assert (outcomes["repo"] == "ok") == (
        world_readable and not (AS_ROOT and _under_tmp(pyproject))
    )


@ROOT_ONLY
def test_writes_outside_its_directory_fail(runner: Runner) -> None:
    assert not os.stat(runner.cwd).st_mode & stat.S_IWOTH
    planted = os.path.join(runner.cwd, "PWNED-by-sandbox")
    source_file = REPO / "src" / "leafpipe" / "evaluation" / "grading" / "sandbox.py"
    before = source_file.read_bytes()
    result, seen = _probe(f"""
attempt("runner cwd", lambda: open({planted!r}, "w").write("x"))
attempt("source", lambda: open({str(source_file)!r}, "a").write("x"))
attempt("read sentinel", lambda: open({runner.sentinel!r}).read())
attempt("remove sentinel", lambda: os.unlink({runner.sentinel!r}))
attempt("chmod sentinel", lambda: os.chmod({runner.sentinel!r}, 0))
""")
    assert result.ok, result
    assert set(_outcomes(seen).values()) <= DENIED, seen
    assert not os.path.exists(planted) and source_file.read_bytes() == before


LEAVE_BEHIND = ("/tmp", "/var/tmp", "/dev/shm")


@ROOT_ONLY
def test_scratch_dirs_leave_nothing_for_other_programs() -> None:
    """A program's files in /tmp, /var/tmp and /dev/shm: seen neither by a program running at the
    same time nor by the next one, and never on the host."""
    names = [f"{d}/leafpipe-left-behind" for d in LEAVE_BEHIND]
    writer = (
        f"import time\nfor name in {names!r}:\n    open(name, 'w').write('x')\n"
        "time.sleep(1.5)\nprint('wrote')\n"
    )
    reader = f"import os, time\ntime.sleep({{}})\nprint([os.path.exists(n) for n in {names!r}])\n"
    during = run_many([writer, reader.format(0.7)], workers=2, limits=FAST)
    after = run_python(reader.format(0), limits=FAST)
    assert during[0].ok and during[0].stdout == "wrote\n", during[0]
    assert during[1].stdout == after.stdout == "[False, False, False]\n", (during[1], after)
    assert not any(os.path.exists(name) for name in names)


@ROOT_ONLY
def test_scratch_space_is_bounded() -> None:
    result = run_python(
        "for i in range(3):\n    open(f'/tmp/f{i}', 'wb').write(b'x' * 2**20)\n",
        limits=Limits(wall_s=5.0, file_mb=2),
    )
    assert result.status == "failed" and "No space left on device" in result.stderr, result


def test_huge_file_hits_the_file_size_limit() -> None:
    """The Python program gets EFBIG (Python ignores SIGXFSZ); a program that does not is killed."""
    python = run_python(
        "open('big', 'wb').write(b'x' * 2 * 2**20)\n", limits=Limits(wall_s=5.0, file_mb=1)
    )
    assert python.status == "failed" and "File too large" in python.stderr, python
    shell = run_python(
        "import subprocess\n"
        "subprocess.run(['head', '-c', '2M', '/dev/zero'], stdout=open('big', 'wb'),"
        " check=True)\n",
        limits=Limits(wall_s=5.0, file_mb=1),
    )
    assert (
        shell.status == "failed"
        and f"died with <Signals.SIGXFSZ: {signal.SIGXFSZ}>" in shell.stderr
    ), shell


@ROOT_ONLY
def test_cannot_signal_or_trace_the_runner(runner: Runner) -> None:
    """kill and ptrace on this process and the supervisor are refused; kill(-1) reaches only the
    program's own processes."""
    result, seen = _probe(f"""
import ctypes, signal, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def trace(pid):
    if libc.ptrace(16, pid, None, None) == -1:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
for name, pid in (("runner", {runner.pid}), ("supervisor", os.getppid())):
    attempt("kill " + name, lambda: os.kill(pid, signal.SIGKILL))
    attempt("term " + name, lambda: os.kill(pid, signal.SIGTERM))
    attempt("trace " + name, lambda: trace(pid))
child = subprocess.Popen(["sleep", "30"])
attempt("kill -1", lambda: os.kill(-1, signal.SIGKILL))
attempt("child", lambda: child.wait(timeout=5))
""")
    assert result.ok, result
    outcomes = _outcomes(seen)
    assert {v for k, v in outcomes.items() if k.split()[-1] in ("runner", "supervisor")} == {
        "PermissionError"
    }, seen
    assert outcomes["kill -1"] == "ok" and seen["child"] == ["ok", -signal.SIGKILL]


def test_open_files_are_limited() -> None:
    result = run_python(
        "import os, resource\nsoft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
        "try:\n    resource.setrlimit(resource.RLIMIT_NOFILE, (4 * hard, 4 * hard))\n"
        "    raised = True\n"
        "except ValueError:\n    raised = False\nprint(hard, raised, flush=True)\n"
        "fds = []\nwhile True:\n    fds.append(os.open('/dev/null', os.O_RDONLY))\n",
        limits=FAST,
    )
    assert result.status == "failed" and "Too many open files" in result.stderr, result
    hard, raised = result.stdout.split()
    assert int(hard) <= FAST.open_files and raised == "False"


def test_threads_count_against_the_process_limit() -> None:
    result = run_python(
        "import os, threading, time\nprint(os.getuid(), flush=True)\n"
        "for _ in range(200):\n"
        "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n",
        limits=FAST,
    )
    assert result.status == "failed" and "can't start new thread" in result.stderr, result
    if AS_ROOT:
        assert _processes_of(int(result.stdout)) == []


@ROOT_ONLY
@pytest.mark.skipif(
    os.path.realpath(tempfile.gettempdir()) != "/tmp", reason="the box is not in /tmp"
)
def test_changing_directory_upward_finds_nothing(runner: Runner) -> None:
    result, seen = _probe("""
start = os.getcwd()
attempt("box", lambda: (os.chdir(".."), os.listdir("."))[1])
attempt("tmp", lambda: (os.chdir(".."), os.getcwd(), os.listdir("."))[1:])
attempt("escape", lambda: (os.chdir("../../.."), os.getcwd())[1])
seen["start"] = start
""")
    assert result.ok, result
    box = os.path.basename(os.path.dirname(seen["start"]))
    assert seen["box"][0] == "PermissionError"  # the box may be passed through, not listed
    # neither the sentinel nor other runs' boxes: only the box and what is mounted back (the way
    # to a venv or a leafpipe checkout under /tmp)
    shown = {box} | {
        Path(p).relative_to("/tmp").parts[0]
        for p in (sys.prefix, leafpipe.__file__)
        if _under_tmp(p)
    }
    assert (
        seen["tmp"][0] == "ok" and seen["tmp"][1][0] == "/tmp" and set(seen["tmp"][1][1]) == shown
    ), seen
    assert seen["escape"] == ["ok", "/"]


NESTED = """
import json, os
from leafpipe.evaluation.grading.sandbox import Limits, run_python
limits = Limits(wall_s=5.0, processes=32)
daemon = ("import os, time\\nr, w = os.pipe()\\nif os.fork() == 0:\\n    os.setsid()\\n"
          "    if os.fork() == 0:\\n"
          "        os.write(w, str(os.getpid()).encode())\\n        time.sleep(60)\\n"
          "    os._exit(0)\\n"
          "print(os.read(r, 32).decode())\\n")
out = {"uid": os.getuid()}
programs = {
    "ok": "print('fine')",
    "kill_parent": "import os, time\\nos.kill(os.getppid(), 9)\\ntime.sleep(1)",
    "daemon": daemon,
    "killpg": "import os\\nos.killpg(0, 9)",
}
for name, source in programs.items():
    r = run_python(source, limits=limits)
    out[name] = {
        "status": r.status, "stdout": r.stdout, "message": r.message, "net": r.network_isolated
    }
out["daemon_alive"] = os.path.exists(f"/proc/{out['daemon']['stdout'].strip()}")
# Documented limitations of a caller that is not root: its /proc entries and /tmp are shared.
environ = f"print(open('/proc/{os.getpid()}/environ').read())"
out["runner_environ"] = run_python(environ, limits=limits).stdout
run_python("open('/tmp/leafpipe-left-behind', 'w').write('x')", limits=limits)
shared = "import os\\nprint(os.path.exists('/tmp/leafpipe-left-behind'))"
out["tmp_shared"] = run_python(shared, limits=limits).stdout
print(json.dumps(out))
"""


def test_unprivileged_caller() -> None:
    """The sandbox as a non-root caller, by running it inside the sandbox (whose user is not root):
    no network namespace, the program may kill its supervisor, and still every run ends cleanly."""
    result = run_python(NESTED, limits=Limits(wall_s=30.0, cpu_s=30.0))
    assert result.ok, result
    seen = json.loads(result.stdout)
    assert seen["uid"] != 0
    assert seen["ok"] == {"status": "ok", "stdout": "fine\n", "message": "", "net": False}
    assert seen["kill_parent"]["status"] == "failed"
    assert "supervisor was killed by SIGKILL" in seen["kill_parent"]["message"]
    assert seen["daemon"]["status"] == "ok" and not seen["daemon_alive"]
    assert seen["killpg"]["status"] == "failed"
    assert "PYTHONHASHSEED=0" in seen["runner_environ"] and seen["tmp_shared"] == "True\n"


KILL_ALL = """
from leafpipe.evaluation.grading.sandbox import Limits, run_python
print(run_python("import os\\nos.kill(-1, 9)", limits=Limits(wall_s=5.0)).status, flush=True)
"""


@ROOT_ONLY  # not as root this program would run as the caller's user and kill this very process
def test_unprivileged_callers_processes_are_all_killable() -> None:
    """Documented: not as root, kill(-1) from the program reaches every process of the caller's
    user, the caller included. Here the caller is a sandboxed program: it alone dies."""
    result = run_python(KILL_ALL, limits=Limits(wall_s=30.0, cpu_s=30.0))
    assert result.status == "failed" and result.returncode == -signal.SIGKILL, result
    assert result.stdout == ""


def test_runner_still_works_after_hostile_programs() -> None:
    assert os.getcwd() == START_CWD
    result = run_python("print(sum(range(10)))\n")
    assert result.ok and result.stdout == "45\n"
