"""Atomic writes: a killed job never leaves a file or folder that looks complete.

Every writer goes to a temporary sibling first and is renamed into place only when complete;
rename is atomic on POSIX file systems when source and target share a directory. A temporary's
name records its writer (`.{name}.tmp-{host}.{pid}-{random}`), so the next write of the same
target removes what a killed writer on this host left behind. A write that runs out of disk
space or over the file-size limit raises `DiskFullError` and leaves the target as it was.
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
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

_TMP = ".tmp-"
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


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write rows as JSON Lines atomically; return the number of rows written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read JSON Lines; a malformed line is an error naming the file and line number."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: malformed JSON line: {err.msg}") from err
    return rows


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
