"""Atomic writes: nothing half-written ever sits at a target, a full disk is a clear error,
and what a killed writer leaves is removed by the next write."""

import errno
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import faults
import pytest

from leafpipe.files.atomic import (
    DiskFullError,
    atomic_path,
    read_jsonl,
    remove_stale_temps,
    write_json,
    write_jsonl,
)


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_directory_output_replaces_old_one_and_has_umask_permissions(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale").write_text("x")
    with atomic_path(target, directory=True) as tmp:
        (tmp / "weights").write_text("w")
    assert sorted(p.name for p in target.iterdir()) == ["weights"]
    assert list(tmp_path.iterdir()) == [target]  # the old folder, moved aside, is gone too
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask


def test_jsonl_round_trip_and_clear_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert write_jsonl([{"id": "a"}, {"id": "b"}], path) == 2
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    path.write_text('{"id": "a"}\n{"id": \n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: malformed JSON"):
        read_jsonl(path)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# --- disk full, file-size limit, and what killed writers leave ----------------------------------


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
        (OSError(errno.EFBIG, "File too large"), errno.EFBIG),
        # What safetensors (Rust) raises: the errno survives only in the message.
        (
            RuntimeError("Error while serializing: IoError(File too large (os error 27))"),
            errno.EFBIG,
        ),
    ],
    ids=["ENOSPC", "EFBIG", "message-only"],
)
def test_disk_full_is_a_clear_error_and_keeps_the_older_target(tmp_path, raised, code):
    """A write that runs out of space names the target, says why and that nothing was written,
    keeps the cause, removes its temporary and leaves the older complete file as it was."""
    target = tmp_path / "out.json"
    write_json({"old": True}, target)
    before = target.read_bytes()
    with pytest.raises(DiskFullError) as caught:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise raised
    assert caught.value.errno == code and caught.value.__cause__ is raised
    assert isinstance(caught.value, OSError)  # callers that catch OSError still do
    why = "out of disk space" if code == errno.ENOSPC else "over the file-size limit"
    assert f"cannot write {target}: {why}" in str(caught.value) and "nothing was written" in str(
        caught.value
    )
    assert target.read_bytes() == before and list(tmp_path.iterdir()) == [target]
    assert pickle.loads(pickle.dumps(caught.value)).args == caught.value.args


def test_other_errors_are_not_called_disk_full(tmp_path):
    with pytest.raises(ValueError, match="bad row"):
        with atomic_path(tmp_path / "out.json"):
            raise ValueError("bad row")


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_next_write_removes_only_what_dead_writers_on_this_host_left(tmp_path):
    """A SIGKILLed writer leaves its temporary; the next write of the target removes it, but not
    a running writer's nor another host's (on a shared file system), nor other files."""
    host, dead = socket.gethostname(), _dead_pid()
    stale = [
        tmp_path / f".out.json.tmp-{host}.{dead}-abc123",
        tmp_path / f".out.json.tmp-{host}.{dead}-d9_old",
    ]
    stale[0].write_text("torn")
    stale[1].mkdir()
    (stale[1] / "weights").write_text("old folder moved aside")
    kept = [
        tmp_path / f".out.json.tmp-{host}.{os.getpid()}-live",
        tmp_path / f".out.json.tmp-elsewhere.{dead}-x",
        tmp_path / f".other.json.tmp-{host}.{dead}-y",
        tmp_path / "out.json.partial",
    ]
    for path in kept:
        path.write_text("keep")
    write_json({"new": True}, tmp_path / "out.json")
    assert sorted(tmp_path.iterdir()) == sorted([*kept, tmp_path / "out.json"])
    assert remove_stale_temps(tmp_path / "out.json") == []


# A child that writes ~20 kB of incompressible rows to argv[1] with argv[2]'s writer; it prints
# the DiskFullError and exits 3.
_WRITER = """
import random, string, sys
import pandas as pd
from leafpipe.files.atomic import DiskFullError, write_jsonl
from leafpipe.files.provenance import write_parquet
rng = random.Random(0)
rows = [{"id": i, "text": "".join(rng.choices(string.ascii_letters, k=100))} for i in range(200)]
try:
    if sys.argv[2] == "parquet":
        write_parquet(pd.DataFrame(rows), sys.argv[1])
    elif sys.argv[2] == "jsonl":
        write_jsonl(rows, sys.argv[1])
    else:  # a checkpoint: torch.save reports only "unexpected pos", not EFBIG
        import torch
        from leafpipe.files.atomic import atomic_path
        with atomic_path(sys.argv[1]) as tmp:
            torch.save({"rows": rows}, tmp)
except DiskFullError as err:
    print(f"{type(err.__cause__).__name__}: {err}")
    sys.exit(3)
"""

# A child that saves the model folder argv[1] to argv[2] with leafpipe's model writer.
_MODEL_SAVER = """
import sys
from transformers import AutoModelForCausalLM
from leafpipe.files.atomic import DiskFullError
from leafpipe.models.pretrain import save_model
from leafpipe.text.tokenizer import load_tokenizer
try:
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
    save_model(model, load_tokenizer(sys.argv[1]), sys.argv[2])
except DiskFullError as err:
    print(f"{type(err.__cause__).__name__}: {err}")
    sys.exit(3)
"""


def _limited(code: str, *args: object, max_bytes: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=faults.child_env(),
        preexec_fn=faults.limit_file_size(max_bytes),
        timeout=120,
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "pt"])
def test_write_over_the_file_size_limit_raises_and_keeps_the_older_file(tmp_path, fmt):
    """Under RLIMIT_FSIZE the real write fails with EFBIG: the writer raises DiskFullError and
    the older complete file survives, with no temporary beside it."""
    target = tmp_path / f"rows.{fmt}"
    target.write_bytes(b"an older complete file")
    failed = _limited(_WRITER, target, fmt, max_bytes=8192)
    assert failed.returncode == 3, failed.stderr[-3000:]
    assert f"cannot write {target}: over the file-size limit" in failed.stdout
    assert "nothing was written" in failed.stdout
    assert target.read_bytes() == b"an older complete file" and list(tmp_path.iterdir()) == [target]


def test_model_folder_over_the_file_size_limit_keeps_the_older_folder(
    tmp_path, tiny_llama, tokenizer
):
    """A model save (atomic_path(directory=True)) whose weights pass the limit: DiskFullError,
    the older model folder unchanged file for file, and no half-written folder beside it."""
    from leafpipe.models.pretrain import save_model

    save_model(tiny_llama(0), tokenizer, tmp_path / "source")
    save_model(tiny_llama(1), tokenizer, tmp_path / "model")
    before = _snapshot(tmp_path / "model")
    failed = _limited(_MODEL_SAVER, tmp_path / "source", tmp_path / "model", max_bytes=16384)
    assert failed.returncode == 3, failed.stderr[-3000:]
    assert f"cannot write {tmp_path / 'model'}: over the file-size limit" in failed.stdout
    assert _snapshot(tmp_path / "model") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "source"]
    assert (tmp_path / "source" / "model.safetensors").stat().st_size > 16384
