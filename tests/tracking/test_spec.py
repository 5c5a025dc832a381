"""The config's `report_to` and `tracking`: refused when unknown or not installed (before any job
starts), and never a reason to retrain."""

import importlib.util

import pytest

from leafpipe.config import ConfigError, validate_config
from leafpipe.stages.specs import stage_config, tracked_settings
from leafpipe.tracking.spec import TrackingSpec, TrackingUnavailable

MODELS = {"teacher": {}, "student": {}}


def _config(**settings) -> dict:
    return validate_config({"models": MODELS, **settings}, "cfg")


def _uninstalled(monkeypatch, *modules: str) -> None:
    """Make `modules` look not installed to the check (find_spec), whatever this venv holds."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a)
    )


def test_by_default_runs_report_nowhere_and_name_themselves_by_stage_model_and_seed():
    config = _config()
    assert config["report_to"] == [] and config["tracking"]["dir"] is None
    spec = TrackingSpec.from_config(config)
    assert spec.report_to == () and spec.project == "leafpipe"
    assert spec.name("distill", "leaf_instr", 3) == "distill-leaf_instr-seed3"


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"report_to": ["comet"]}, "comet"),
        ({"report_to": ["wandb", "wandb"]}, "non-unique|unique"),
        ({"tracking": {"projekt": "x"}}, "projekt"),
        ({"tracking": {"run_name": "{variant}-{seed}"}}, "unknown field.*variant"),
    ],
)
def test_unknown_backends_keys_and_run_name_fields_are_refused(settings, words):
    with pytest.raises(ConfigError, match=words):
        _config(**settings)


def test_a_backend_asked_for_but_not_installed_fails_the_config_check_with_the_pip_command(
    monkeypatch,
):
    _uninstalled(monkeypatch, "wandb", "trackio")
    with pytest.raises(ConfigError, match=r"cfg: .*wandb, trackio.*pip install 'leafpipe\[wandb,"):
        _config(report_to=["wandb", "trackio"])
    spec = TrackingSpec(report_to=("trackio",))
    with pytest.raises(TrackingUnavailable, match=r"pip install 'leafpipe\[trackio\]'"):
        spec.require()
    assert TrackingSpec(report_to=()).missing() == []


def test_where_metrics_go_is_read_by_distill_but_never_retrains():
    config = _config()
    wildcards = {"variant": "kd", "model": "kd"}
    elsewhere = {
        **config,
        "report_to": ["tensorboard", "wandb"],
        "tracking": {"project": "p", "run_name": "{model}", "dir": "/tmp/x"},
    }
    assert tracked_settings("distill", config, wildcards) == tracked_settings(
        "distill", elsewhere, wildcards
    )
    cut = stage_config("distill", elsewhere, wildcards)
    assert TrackingSpec.from_config(cut).report_to == ("tensorboard", "wandb")
    # The report reads the whole config: a changed report_to sends the scores again.
    assert tracked_settings("report", config, {}) != tracked_settings("report", elsewhere, {})
