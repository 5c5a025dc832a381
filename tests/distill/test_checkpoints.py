"""state.pt round trip: a state is restored whole, or not at all."""

from __future__ import annotations

import logging

import torch

from leafpipe.distill.checkpoints import (
    STATE,
    STATE_FORMAT,
    TrainingState,
    load_state,
    save_state,
)


def _save(tmp_path, state: TrainingState) -> None:
    save_state(
        tmp_path,
        state,
        fingerprint="f",
        trainable={"w": torch.ones(2)},
        optimizer={"state": {}},
        elapsed=1.5,
    )


def test_a_saved_state_comes_back_whole(tmp_path):
    state = TrainingState(epoch=2, position=3, step=7, best_val=0.5, best_epoch=1, resumed=[4])
    _save(tmp_path, state)
    saved = load_state(tmp_path, fingerprint="f")
    assert saved.state == TrainingState(**{**state.__dict__, "elapsed": 1.5})
    torch.testing.assert_close(saved.trainable["w"], torch.ones(2))


def test_a_state_with_keys_this_version_does_not_know_is_not_resumed(tmp_path, caplog):
    _save(tmp_path, TrainingState(step=7))
    payload = torch.load(tmp_path / STATE, weights_only=True)
    torch.save({**payload, "ema_weights": {}}, tmp_path / STATE)
    with caplog.at_level(logging.WARNING):
        assert load_state(tmp_path, fingerprint="f") is None
    assert "does not know (ema_weights)" in caplog.text


def test_a_state_of_an_older_format_is_not_resumed_and_the_log_says_so(tmp_path, caplog):
    """Format 3 moved a sharded run's state out of state.pt; an older state.pt starts afresh."""
    _save(tmp_path, TrainingState(step=7))
    payload = torch.load(tmp_path / STATE, weights_only=True)
    torch.save({**payload, "format": STATE_FORMAT - 1}, tmp_path / STATE)
    with caplog.at_level(logging.WARNING):
        assert load_state(tmp_path, fingerprint="f") is None
    assert f"state format {STATE_FORMAT - 1}, this version resumes format {STATE_FORMAT}" in (
        caplog.text
    )
