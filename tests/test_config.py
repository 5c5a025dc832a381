import os

import pytest

from leafpipe.config import (
    ConfigError,
    check_sbatch_safe_paths,
    go_offline_unless_hub_needed,
    local_dataset_files,
    validate_config,
)

MODELS = {"teacher": {}, "student": {}}


def test_defaults_fill_settings_but_not_domain_overrides():
    config = validate_config(
        {"models": MODELS, "detection": {"domains": {"math": {"percentile": 5}}}}, "cfg"
    )
    assert (
        config["detection"]["percentile"] == 10 and config["detection"]["strategy"] == "percentile"
    )
    assert config["detection"]["domains"] == {"math": {"percentile": 5}}
    assert config["scoring"]["shards"] == 1 and config["scoring"]["loss"] == "mean"
    assert config["distill"]["teacher_topk"] is None  # the teacher runs inside each kd job


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"detection": {"strategy": "magic"}}, "magic"),
        ({"detection": {"domains": {"code": {"percentil": 5}}}}, "percentil"),
        ({"scoring": {"shards": 0}}, "shards"),
        ({"scoring": {"batch_size": 16}}, "batch_size"),
        ({"distill": {"teacher_topk": 0}}, "teacher_topk"),
    ],
)
def test_bad_settings_are_clear_errors(settings, words):
    with pytest.raises(ConfigError, match=words):
        validate_config({"models": MODELS, **settings}, "cfg")


def _with_benchmarks(benchmarks):
    return {"models": MODELS, "evaluation": {"benchmarks": benchmarks}}


def test_benchmark_entries_get_defaults_and_shipped_kinds_need_no_path():
    config = validate_config(
        _with_benchmarks({"gsm8k": {"kind": "gsm8k", "limit": 5}, "w": {"split": "test"}}), "cfg"
    )
    gsm8k = config["evaluation"]["benchmarks"]["gsm8k"]
    assert (gsm8k["n"], gsm8k["temperature"], gsm8k["k"]) == (1, 0.0, [1])
    # No stop strings of its own: its protocol's apply (leafpipe.evaluation.protocols).
    assert gsm8k["protocol"] == "leafpipe" and "stop" not in gsm8k


@pytest.mark.parametrize(
    ("bench", "words"),
    [
        ({"kind": "gsm8k", "split": "test"}, "split` belongs to kind world"),
        ({"kind": "world"}, "kind world needs one"),
        ({"kind": "jsonl"}, "kind jsonl needs a `path`"),
        ({"kind": "humaneval", "n": 4}, "need sampling"),
        ({"kind": "humaneval", "n": 4, "temperature": 0.8, "k": [1, 10]}, "pass@10 needs n >= 10"),
        ({"kind": "mmlu"}, "mmlu"),
        ({"kind": "gsm8k", "path": "/no/such/file.jsonl"}, "no such file"),
    ],
)
def test_bad_benchmark_entries_are_clear_errors(bench, words):
    with pytest.raises(ConfigError, match=words):
        validate_config(_with_benchmarks({"b": bench}), "cfg")


def _entry_error(bench: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(_with_benchmarks({"b": bench}), "cfg")
    return str(caught.value)


def test_a_folder_path_is_read_by_leetcode_and_a_release_only(tmp_path):
    (tmp_path / "test.jsonl").write_text("")
    folder = str(tmp_path)
    config = validate_config(
        _with_benchmarks(
            {
                "lc": {"kind": "leetcode", "path": folder},
                "lcb": {"kind": "livecodebench", "release": "release_v1", "path": folder},
            }
        ),
        "cfg",
    )
    assert config["evaluation"]["benchmarks"]["lcb"]["path"] == folder
    error = _entry_error({"kind": "gsm8k", "path": folder})
    assert "evaluation.benchmarks.b.path" in error and "only by kind leetcode" in error
    error = _entry_error(
        {"kind": "livecodebench", "release": "release_v1", "path": str(tmp_path / "test.jsonl")}
    )
    assert "no such folder" in error and "release's files" in error
    assert "no such file or folder" in _entry_error({"kind": "leetcode", "path": "/no/such"})


@pytest.mark.parametrize(
    ("bench", "words"),
    [
        ({"kind": "gsm8k", "release": "release_v4"}, "b: release: only kind livecodebench"),
        (
            {"kind": "humaneval", "start_date": "2024-01-01", "end_date": "2024-06-01"},
            "b: start_date, end_date: only kind livecodebench has releases",
        ),
        ({"split": "test", "end_date": "2024-06-01"}, "not kind world"),
        (
            {"kind": "humaneval", "protocol": "qwen25-math-cot"},
            "b.protocol: qwen25-math-cot asks only kinds gsm8k, math500, not kind humaneval "
            r"\(protocols for kind humaneval: leafpipe, evalplus\)",
        ),
        ({"kind": "gsm8k", "protocol": "evalplus"}, "protocols for kind gsm8k: leafpipe, qwen"),
        ({"kind": "gsm8k", "code_tests": "isolated"}, "b.code_tests: only code kinds run tests"),
    ],
)
def test_settings_of_other_kinds_are_refused_before_any_job(bench, words):
    with pytest.raises(ConfigError, match=words):
        validate_config(_with_benchmarks({"b": bench}), "cfg")


def test_releases_dates_and_fitting_protocols_are_accepted():
    benches = {
        "lcb": {"kind": "livecodebench", "release": "release_v4", "start_date": "2024-01-01"},
        "math": {"kind": "math500", "protocol": "qwen25-math-cot"},
        "code": {"kind": "humaneval_plus", "protocol": "evalplus"},
        "shared": {"kind": "leetcode", "code_tests": "same_process"},
    }
    config = validate_config(_with_benchmarks(benches), "cfg")
    assert config["evaluation"]["benchmarks"]["math"]["protocol"] == "qwen25-math-cot"
    assert config["evaluation"]["code_tests"] == "isolated"  # the schema's default
    assert "code_tests" not in config["evaluation"]["benchmarks"]["code"]


OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _offline_switches(monkeypatch, config: dict) -> list[str | None]:
    """The HF offline switches after `go_offline_unless_hub_needed` on the validated config."""
    for name in OFFLINE:
        monkeypatch.delenv(name, raising=False)
    go_offline_unless_hub_needed(validate_config({"models": MODELS, **config}, "cfg"))
    return [os.environ.get(name) for name in OFFLINE]


def _local_dataset(root) -> dict:
    (root / "data").mkdir()
    (root / "data" / "train.parquet").write_bytes(b"")
    return {"dataset": str(root)}


def test_a_local_only_config_goes_offline(monkeypatch, tmp_path):
    assert _offline_switches(monkeypatch, {}) == ["1", "1"]
    local = {"corpus": {"dataset": _local_dataset(tmp_path)}}
    assert _offline_switches(monkeypatch, local) == ["1", "1"]
    parquet = {"dataset": "parquet", "data_files": str(tmp_path / "data" / "*.parquet")}
    assert _offline_switches(monkeypatch, {"corpus": {"dataset": parquet}}) == ["1", "1"]
    release = {"kind": "livecodebench", "release": "release_v1", "path": str(tmp_path)}
    assert _offline_switches(monkeypatch, _with_benchmarks({"lcb": release})) == ["1", "1"]


@pytest.mark.parametrize(
    "config",
    [
        {"corpus": {"hub": "owner/data:train.parquet"}},
        {"corpus": {"dataset": {"dataset": "AI-MO/NuminaMath-CoT"}}},
        _with_benchmarks({"g": {"kind": "olympiadbench", "hub": "owner/data:test.jsonl"}}),
        _with_benchmarks({"d": {"kind": "jsonl", "dataset": {"dataset": "owner/problems"}}}),
        _with_benchmarks({"lcb": {"kind": "livecodebench", "release": "release_v4"}}),
        {"models": {"teacher": {"path": "owner/teacher-model"}, "student": {}}},
    ],
    ids=[
        "corpus hub",
        "corpus hub dataset",
        "benchmark hub",
        "benchmark hub dataset",
        "release from the hub",
        "hub model",
    ],
)
def test_a_config_naming_the_hub_keeps_network_access(monkeypatch, config):
    assert _offline_switches(monkeypatch, config) == [None, None]


def test_a_local_dataset_is_its_files_and_a_hub_dataset_none(tmp_path, monkeypatch):
    spec = _local_dataset(tmp_path)
    (tmp_path / "README.md").write_text("---\n---\n")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "lock").write_text("")
    assert local_dataset_files(spec) == [
        str(tmp_path / "README.md"),
        str(tmp_path / "data" / "train.parquet"),
    ]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "test.parquet").write_bytes(b"")
    builder = {"dataset": "parquet", "data_files": {"train": "data/tr*.parquet", "test": ["x"]}}
    assert local_dataset_files(builder) == ["data/train.parquet"]
    remote = {"dataset": "json", "data_files": "hf://datasets/owner/name/a.jsonl"}
    assert local_dataset_files(remote) == []
    assert local_dataset_files({"dataset": "AI-MO/NuminaMath-CoT"}) == []
    assert local_dataset_files(None) == []


@pytest.mark.parametrize(("device", "gpus"), [("cuda", 1), ("cpu", 0)])
def test_lm_eval_jobs_get_resources_and_a_gpu_unless_on_the_cpu(device, gpus):
    from leafpipe.execution.plan import given_resources

    lm_eval = {"tasks": ["gsm8k"], "device": device}
    config = validate_config(
        {
            "models": MODELS,
            "evaluation": {"lm_eval": lm_eval},
            "resources": {"lm_eval": {"mem_mb": 64000}},
        },
        "cfg",
    )
    assert given_resources(config, "lm_eval") == {
        "mem_mb": 64000,
        "runtime": 60,
        "gpu": gpus,
        "threads": 1,
    }


def test_a_local_dataset_file_named_as_shell_code_is_refused_for_slurm(tmp_path):
    folder = tmp_path / "data $(touch PWNED)"
    folder.mkdir()
    bench = {"kind": "jsonl", "dataset": _local_dataset(folder)}
    config = validate_config(_with_benchmarks({"b": bench}), "cfg")
    with pytest.raises(ConfigError, match=r"evaluation.benchmarks.b files '.*PWNED"):
        check_sbatch_safe_paths(config, [], str(tmp_path))
