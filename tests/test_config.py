import pytest

from leafpipe.config import ConfigError, validate_config

MODELS = {"teacher": {}, "student": {}}


def test_defaults_fill_settings_but_not_domain_overrides():
    config = validate_config({"models": MODELS, "detection": {"domains": {"math": {"percentile": 5}}}}, "cfg")
    assert config["detection"]["percentile"] == 10 and config["detection"]["strategy"] == "percentile"
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
