"""The sandbox survives hostile programs and keeps their effects inside.

Every hostile program must end as "failed" or "timeout" while this pytest process carries on.
The fork bomb runs only after `test_process_limit_applies` has shown that the process limit
holds (as root it holds only because the program runs as another user); pytest's
definition order runs that test first.
"""

from __future__ import annotations

import json
import os
import socket
import time
import tracemalloc

import pytest

from leafpipe.sandbox import SANDBOX_UID_BASE, Limits, RunResult, run_many, run_python

FAST = Limits(wall_s=5.0, cpu_s=2.0, processes=32)
AS_ROOT = os.geteuid() == 0


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
    result = run_python("import sys\nprint(sys.stdin.read().upper(), end='')\n", stdin="hello\nworld\n")
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
        "import os, json\nprint(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), 'ls': os.listdir('.'),"
        " 'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups()}))\n"
    )
    assert result.ok, result
    assert "hunter2" not in result.stdout
    seen = json.loads(result.stdout)
    assert "LEAFPIPE_TEST_SECRET" not in seen["env"]
    assert set(seen["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE",
                                "PYTHONUTF8", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}
    assert seen["env"]["HOME"] == seen["cwd"] and seen["ls"] == []
    assert not os.path.exists(seen["cwd"])  # removed after the run
    if AS_ROOT:
        assert seen["uid"] >= SANDBOX_UID_BASE and seen["gid"] == seen["uid"] and seen["groups"] == []


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
    result = run_python("import os\nos.kill(os.getppid(), 9)\nimport time\ntime.sleep(1)\n", limits=FAST)
    _ended_badly(result)
    if AS_ROOT:  # the parent is the supervisor, root, out of reach of the sandbox user
        assert "PermissionError" in result.stderr
    else:  # the supervisor dies, and the run says so
        assert "supervisor was killed" in result.message


def test_killing_its_own_group_fails_cleanly() -> None:
    result = run_python("import os, subprocess\nsubprocess.Popen(['sleep', '60'])\nos.killpg(0, 9)\n", limits=FAST)
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
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'hi')\n",
            limits=FAST,
        )
        if not result.network_isolated:
            pytest.skip("no network namespace here (needs CAP_SYS_ADMIN): the program had the network")
        _ended_badly(result)
        assert "unreachable" in result.stderr
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing connected
    resolved = run_python("import socket\nprint(socket.getaddrinfo('pypi.org', 443))\n", limits=FAST)
    assert resolved.network_isolated
    _ended_badly(resolved)


def test_flood_of_output_is_truncated_with_bounded_memory() -> None:
    limits = Limits(wall_s=10.0, output_bytes=100_000)
    tracemalloc.start()
    try:
        result = run_python("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1_000_000)\n",
                            limits=limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _ended_badly(result)
    assert result.truncated and "output limit" in result.message
    assert result.stdout == "x" * 100_000
    assert peak < 10_000_000  # the runner never held the 100 MB


def test_stderr_flood_is_truncated() -> None:
    result = run_python("import sys\nwhile True:\n    sys.stderr.write('e' * 10_000)\n",
                        limits=Limits(wall_s=10.0, output_bytes=50_000))
    _ended_badly(result)
    assert result.truncated and len(result.stderr) <= 50_000


def test_closing_stdout_fails_cleanly() -> None:
    result = run_python("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(0.2)\nprint('x')\n", limits=FAST)
    _ended_badly(result)
    assert result.stdout == ""


def test_locked_working_directory_is_removed() -> None:
    result = run_python(
        "import os\nos.makedirs('a/b')\nos.symlink('/etc', 'a/etc')\nos.chmod('a/b', 0)\nos.chmod('a', 0)\n"
        "os.chmod('.', 0)\nprint(os.getcwd())\n",
        limits=FAST,
    )
    assert result.ok, result
    assert not os.path.exists(result.stdout.strip())
    assert os.stat("/etc").st_mode & 0o755 == 0o755  # the symlink was not followed


def test_run_many_keeps_order() -> None:
    sources = [f"import time, random\ntime.sleep(random.random() / 20)\nprint(int(input()) * 100 + {i})\n"
               for i in range(12)]
    results = run_many(sources, stdins=[str(i) for i in range(12)], workers=4)
    assert [r.stdout for r in results] == [f"{i * 101}\n" for i in range(12)]
    with pytest.raises(ValueError):
        run_many(sources, stdins=["1"])


def test_runner_still_works_after_hostile_programs() -> None:
    result = run_python("print(sum(range(10)))\n")
    assert result.ok and result.stdout == "45\n"


NESTED = '''
import json, os
from leafpipe.sandbox import Limits, run_python
limits = Limits(wall_s=5.0, processes=32)
daemon = ("import os, time\\nr, w = os.pipe()\\nif os.fork() == 0:\\n    os.setsid()\\n    if os.fork() == 0:\\n"
          "        os.write(w, str(os.getpid()).encode())\\n        time.sleep(60)\\n    os._exit(0)\\n"
          "print(os.read(r, 32).decode())\\n")
out = {"uid": os.getuid()}
for name, source in {"ok": "print('fine')", "kill_parent": "import os, time\\nos.kill(os.getppid(), 9)\\ntime.sleep(1)",
                     "daemon": daemon, "killpg": "import os\\nos.killpg(0, 9)"}.items():
    r = run_python(source, limits=limits)
    out[name] = {"status": r.status, "stdout": r.stdout, "message": r.message, "net": r.network_isolated}
out["daemon_alive"] = os.path.exists(f"/proc/{out['daemon']['stdout'].strip()}")
print(json.dumps(out))
'''


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
