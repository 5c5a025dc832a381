"""Atomic writes: a killed job never leaves a file or folder that looks complete.

Every writer goes to a temporary sibling first and is renamed into place only when complete;
rename is atomic on POSIX file systems when source and target share a directory. A temporary's
name records its writer (`.{name}.tmp-{host}.{pid}-{random}`), so the next write of the same
target removes what a killed writer on this host left behind. A write that runs out of disk
space or over the file-size limit raises `DiskFullError` and leaves the target as it was.

The JSON and JSON Lines writers can record what a file was made from in a sidecar beside it, which
their readers check (`leafpipe.files.fingerprints`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from leafpipe.files.fingerprints import (
    PathLike,
    check_described,
    check_inputs,
    check_rows,
    fingerprint,
    make_record,
    read_sidecar,
    sidecar,
)

_TMP = ".tmp-"
_Rows = TypeVar("_Rows", int, None)  # a JSON Lines file's row count; none for one JSON value
_FULL = {
    errno.ENOSPC: "out of disk space on its file system (ENOSPC)",
    errno.EFBIG: "over the file-size limit (EFBIG; see `ulimit -f`)",
}


class DiskFullError(OSError):
    """A write that failed for want of space (ENOSPC) or over the file-size limit (EFBIG).

    `errno` is the cause's; `target` the output that was not written. The target is as it was
    before the write (absent, or the older complete version) and no temporary is left.
    """

    def __init__(self, code: int, target: str | os.PathLike[str]):
        target = Path(target)
        super().__init__(
            code,
            f"cannot write {target}: {_FULL[code]}; nothing was written "
            f"(a previous {target.name}, if any, is unchanged)",
        )
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:  # OSError would pickle (errno, message)
        return type(self), (self.errno, self.target)


def _owner() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of `target` whose writer, a process on this host, no longer runs
    (it was killed mid-write); return them. Another host's temporaries, on a shared file
    system, and those of running writers are left alone."""
    target = Path(target)
    stem, host = f".{target.name}{_TMP}", socket.gethostname()
    stale = []
    with contextlib.suppress(FileNotFoundError), os.scandir(target.parent) as entries:
        for entry in entries:
            if not entry.name.startswith(stem):
                continue
            owner_host, _, pid = entry.name[len(stem) :].rpartition("-")[0].rpartition(".")
            if owner_host == host and pid.isdigit() and not _alive(int(pid)):
                stale.append(Path(entry.path))
    for path in stale:
        _remove(path)
    return stale


def _causes(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is not None and id(e) not in seen:
            seen.add(id(e))
            yield e
            todo += [e.__cause__, e.__context__]


def _disk_full(err: BaseException, tmp: Path) -> int | None:
    """ENOSPC or EFBIG when `err` (or what it was raised from) is one of them, or when a writer
    that reports neither (torch.save says only "file write failed") has filled the file system
    or reached the file-size limit with `tmp`; else None."""
    for e in _causes(err):
        if isinstance(e, OSError) and e.errno in _FULL:
            return e.errno
        text = str(e)  # libraries in C++ or Rust (pyarrow, safetensors) keep only the message
        for code in _FULL:
            if os.strerror(code) in text:
                return code
    if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: not a failed write
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    files = [p for p in ([tmp] if tmp.is_file() else tmp.rglob("*")) if p.is_file()]
    if limit != resource.RLIM_INFINITY and any(p.stat().st_size >= limit for p in files):
        return errno.EFBIG
    with contextlib.suppress(OSError):
        if os.statvfs(tmp.parent).f_bavail == 0:
            return errno.ENOSPC
    return None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` only if the block succeeds.

    Raises `DiskFullError` (from the original error) when the block runs out of disk space or
    over the file-size limit; on any failure the temporary is removed and `target` untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    prefix = f".{target.name}{_TMP}{_owner()}-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create owner-only entries; give the result the usual umask permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~umask)
        if directory and target.exists():
            # Move the old folder aside (named as a temporary, so a kill here is cleaned up next
            # time) rather than deleting it in place: a half-deleted folder would look complete.
            old = tmp.with_name(tmp.name + "_old")
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    except BaseException as err:
        full = _disk_full(err, tmp)
        _remove(tmp)
        if full is not None:
            raise DiskFullError(full, target) from err
        raise


def _write_recorded(
    path: str | os.PathLike[str],
    inputs: Sequence[PathLike] | None,
    write: Callable[[Path], _Rows],
) -> _Rows:
    """`write` a temporary that becomes `path`, with `path`'s sidecar record of `inputs`, the row
    count `write` returns and the file's own fingerprint; with no `inputs`, remove any previous
    record first.

    The record is published just before the file, so that the file is still the last thing a
    job makes; a job killed between the two leaves an older file (if any) beside the new record,
    which refuses it by its fingerprint (`fingerprints.check_described`).
    """
    if inputs is None:
        sidecar(path).unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        rows = write(tmp)
        if inputs is not None:
            record = {**make_record(inputs, rows), "sha256": fingerprint(tmp)}
            with atomic_path(sidecar(path)) as side:
                side.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return rows


def write_jsonl(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    inputs: Sequence[PathLike] | None = None,
) -> int:
    """Write rows as JSON Lines atomically; return the number of rows written.

    With `inputs` (the files the rows were made from: a stage's rule inputs), the row count and
    their fingerprints go to the file's sidecar, which `read_jsonl` checks. Without, the file has
    no record, and one a previous write left is removed.
    """

    def lines(tmp: Path) -> int:
        n = 0
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        return n

    return _write_recorded(path, inputs, lines)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read JSON Lines; a malformed line is an error naming the file and line number.

    A file with a sidecar record is refused (`StaleInputError`) when an input it records has
    changed since, or it holds other rows or bytes than were written; one without is read as it
    is.
    """
    record = read_sidecar(path)
    check_inputs(path, record)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: malformed JSON line: {err.msg}") from err
    check_rows(path, record, len(rows))
    check_described(path, record)
    return rows


def write_json(
    obj: Any, path: str | os.PathLike[str], inputs: Sequence[PathLike] | None = None
) -> None:
    """Write one JSON value atomically; `inputs` as for `write_jsonl` (no row count)."""

    def value(tmp: Path) -> None:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    _write_recorded(path, inputs, value)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read one JSON value, refused as `read_jsonl` refuses a file whose recorded input changed."""
    record = read_sidecar(path)
    check_inputs(path, record)
    check_described(path, record)
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
