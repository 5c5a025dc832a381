"""A hub model's shape for the planner comes from the offline cache at the revision its role pins
(`models.<role>.revision`), not from whichever revision `main` points at."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest

from leafpipe.execution.model_shapes import hub_shape, role_shapes

REPO = "owner/pinned-model"
COMMITS = {"main": "a" * 40, "v2": "b" * 40}  # ref -> commit, as the hub cache records them
LAYERS = {"main": 2, "v2": 5}


def _cache_snapshot(cache: Path, ref: str) -> None:
    """One revision of REPO in the hub cache's layout: refs/<ref> and snapshots/<commit>/."""
    repo = cache / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(COMMITS[ref])
    snapshot = repo / "snapshots" / COMMITS[ref]
    snapshot.mkdir(parents=True)
    config = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": LAYERS[ref],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 300,
    }
    (snapshot / "config.json").write_text(json.dumps(config))


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    for ref in COMMITS:
        _cache_snapshot(tmp_path, ref)
    return tmp_path


def test_a_hub_shape_is_read_at_the_pinned_revision(hub_cache: Path) -> None:
    assert hub_shape(REPO).layers == LAYERS["main"]
    assert hub_shape(REPO, "v2").layers == LAYERS["v2"]
    assert hub_shape(REPO, COMMITS["v2"]).layers == LAYERS["v2"]


def test_the_planner_reads_each_role_at_its_own_revision(hub_cache: Path) -> None:
    config = {
        "results": "results",
        "seeds": [0],
        "models": {
            "teacher": {"path": REPO, "revision": "v2"},
            "student": {"path": REPO},
        },
    }
    shapes = role_shapes(config)
    assert (shapes["teacher"].layers, shapes["student"].layers) == (LAYERS["v2"], LAYERS["main"])
