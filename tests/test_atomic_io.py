import os

import pytest

from leafpipe.atomic_io import atomic_path, read_jsonl, write_jsonl


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
