import pytest

from leafpipe.config import ConfigError, validate_config

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
