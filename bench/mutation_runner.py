"""Run test selections against planted mutants, fork-server style.

Importing torch, transformers and pandas takes seconds; a test file of a core module often runs
in less. So the parent imports them once and forks one child per mutant: the child forgets the
project's own modules (`roots`: everything imported from under them), serves the mutated module
through `mutation_site/sitecustomize.py` (also to the Python processes it starts, such as math
grading's spawned workers), runs pytest in-process and exits with its status. A non-zero status
kills the mutant; a child that outlives its timeout is killed with its process group and counts
as a killed mutant, reported apart. Torch is never run in the parent: an OpenMP pool used before
a fork can hang the child.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

SITE = Path(__file__).resolve().parent / "mutation_site"
KILLED, SURVIVED, TIMEOUT = "killed", "survived", "timeout"


@dataclass(frozen=True)
class Job:
    """One pytest run: `tests` (pytest arguments) against `module` (dotted) with its file `path`
    replaced by `source`; `source` None runs the tests on the code as it is (a baseline)."""

    key: str
    tests: tuple[str, ...]
    module: str | None
    path: str | None
    source: str | None
    timeout_s: float


@dataclass(frozen=True)
class Outcome:
    """What a job's run did: `status` (killed, survived or timeout), the pytest exit status, the
    node id of the first failing test (None if none failed or the run died first), its
    wall-clock seconds and the CPU seconds of the child itself (what a quiet machine would
    take, where other work shares the cores)."""

    key: str
    status: str
    exit_code: int | None
    first_failure: str | None
    seconds: float
    cpu_s: float | None


def _file(work: Path, job: Job, suffix: str) -> Path:
    """A file of `job`'s in the run's folder (keys hold characters file names should not)."""
    return work / (hashlib.sha1(job.key.encode()).hexdigest()[:16] + suffix)


class _FirstFailure:
    """pytest plugin: remembers the node id of the first failing test (or collection)."""

    def __init__(self) -> None:
        self.nodeid: str | None = None

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed and self.nodeid is None:
            self.nodeid = report.nodeid

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed and self.nodeid is None:
            self.nodeid = report.nodeid or "<collection>"


def _forget(roots: Sequence[Path]) -> None:
    """Drop every imported module whose file lies under one of `roots` (the package, the tests
    and their helpers), so the child imports them again, against the mutant."""
    prefixes = tuple(str(root) + os.sep for root in roots)
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if name != "__main__" and os.path.abspath(file).startswith(prefixes):
            del sys.modules[name]


def _load_site() -> ModuleType:
    """bench/mutation_site/sitecustomize.py, under a name no other module has."""
    spec = importlib.util.spec_from_file_location("mutation_site", SITE / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _child(job: Job, roots: Sequence[Path], work: Path, threads: int) -> int:
    """The forked child's whole life: returns pytest's exit status."""
    os.setpgid(0, 0)  # so a timeout kills the workers it starts as well
    if "torch" in sys.modules:  # the workers share the cores rather than oversubscribe them
        sys.modules["torch"].set_num_threads(threads)
    log = os.open(_file(work, job, ".log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.dont_write_bytecode = True
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _forget(roots)
    if job.source is not None:
        mutant_file = _file(work, job, ".json")
        record = {"module": job.module, "path": job.path, "source": job.source}
        mutant_file.write_text(json.dumps(record), encoding="utf-8")
        site = _load_site()
        site.install(str(mutant_file))
        os.environ[site.MUTANT_ENV] = str(mutant_file)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(SITE), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    import pytest

    recorder = _FirstFailure()
    args = [*job.tests, "-x", "-q", "-p", "no:cacheprovider"]
    code = int(pytest.main(args, plugins=[recorder]))
    _file(work, job, ".result").write_text(json.dumps([code, recorder.nodeid]))
    return code


def _start(job: Job, roots: Sequence[Path], work: Path, threads: int) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 70  # EX_SOFTWARE: the child failed before pytest reported
        try:
            code = _child(job, roots, work, threads)
        finally:
            # not sys.exit: the parent's atexit hooks (its temporary folder's removal) are not ours
            os._exit(code)
    return pid


def _end_group(pid: int) -> None:
    """Kill the process group a child of ours leads (itself and what it started)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _outcome(job: Job, status: int, work: Path, seconds: float, cpu_s: float) -> Outcome:
    result = _file(work, job, ".result")
    code, failure = json.loads(result.read_text()) if result.exists() else (None, None)
    if code is None:
        code = os.waitstatus_to_exitcode(status)
    return Outcome(job.key, SURVIVED if code == 0 else KILLED, code, failure, seconds, cpu_s)


def _progress(outcome: Outcome, done: int, total: int) -> None:
    """One line per finished job, so that a run stopped early still shows what it found."""
    cpu = "" if outcome.cpu_s is None else f" ({outcome.cpu_s:.1f} s CPU)"
    failure = f" {outcome.first_failure}" if outcome.first_failure else ""
    print(f"[{done}/{total}] {outcome.status} {outcome.key}{cpu}{failure}", file=sys.stderr)


def run_jobs(
    jobs: Sequence[Job], roots: Sequence[Path], workers: int, progress: bool = False
) -> dict[str, Outcome]:
    """Run `jobs`, `workers` at a time, each in a forked child; their outcomes by key.

    The caller has imported what the tests import from outside `roots` (the fork server's
    warm state) and must not have run torch."""
    outcomes: dict[str, Outcome] = {}
    pending = list(reversed(jobs))
    running: dict[int, tuple[Job, float]] = {}
    threads = max(1, (os.cpu_count() or 1) // workers)
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        work = Path(tmp)
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop()
                running[_start(job, roots, work, threads)] = (job, time.monotonic())
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            now = time.monotonic()
            if pid:
                job, started = running.pop(pid)
                _end_group(pid)  # workers it left behind (it skipped atexit)
                cpu_s = usage.ru_utime + usage.ru_stime
                outcomes[job.key] = _outcome(job, status, work, now - started, cpu_s)
                if progress:
                    _progress(outcomes[job.key], len(outcomes), len(jobs))
            for child, (job, started) in list(running.items()):
                if now - started > job.timeout_s:
                    _end_group(child)
                    os.waitpid(child, 0)
                    del running[child]
                    outcomes[job.key] = Outcome(job.key, TIMEOUT, None, None, now - started, None)
                    if progress:
                        _progress(outcomes[job.key], len(outcomes), len(jobs))
            if not pid:
                time.sleep(0.05)
    return outcomes
