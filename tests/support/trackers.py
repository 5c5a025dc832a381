"""A tracking backend that records what it is sent, standing in for the real ones in tests that
check what leafpipe logs rather than how a backend stores it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from leafpipe.tracking import runs
from leafpipe.tracking.runs import RunPlan
from leafpipe.tracking.spec import TrackingSpec


class RecordingTracker:
    """Every call, in order: the plan it started with, scalars by step, summaries, finish."""

    def __init__(self, plan: RunPlan, resumed_at: int | None) -> None:
        self.plan, self.resumed_at = plan, resumed_at
        self.scalars: list[tuple[int, dict[str, float]]] = []
        self.summaries: list[dict[str, Any]] = []
        self.finished: bool | None = None  # None: not finished; else whether it failed

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        self.scalars.append((step, dict(scalars)))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self.summaries.append(dict(summary))

    def finish(self, failed: bool = False) -> None:
        self.finished = failed


def record_backend(monkeypatch: pytest.MonkeyPatch, backend: str) -> list[RecordingTracker]:
    """Replace `backend`'s adapter by a `RecordingTracker` (and count it installed); returns the
    list every run started on it is appended to."""
    started: list[RecordingTracker] = []

    def opener(plan: RunPlan, resumed_at: int | None) -> RecordingTracker:
        started.append(RecordingTracker(plan, resumed_at))
        return started[-1]

    monkeypatch.setitem(runs.OPENERS, backend, opener)
    monkeypatch.setattr(TrackingSpec, "missing", lambda self: [])
    return started
