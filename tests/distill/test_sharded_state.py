"""A sharded (FSDP) run's resumable state (leafpipe.distill.sharded_state) and its final model,
in a process group of one in this process: the round trip, the fingerprint check, an interrupted
save, and the save_pretrained folder gathered from the shards. The two-process run, killed and
resumed bit for bit with a shard file per process, is test_parallel's
test_killed_two_process_run_resumes_bitwise[fsdp]."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from distill_groups import TWO_ITEM_STEPS, many_groups
from distill_runs import assert_bitwise_equal
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM

from leafpipe.distill import sharded_state
from leafpipe.distill.checkpoints import (
    LAST,
    STATE,
    STATE_SHARDS,
    TRAINING,
    TrainingState,
    rng_state,
)
from leafpipe.distill.parallel import ShardedStudent
from leafpipe.distill.parts import make_optimizer
from leafpipe.distill.resume import Checkpointing
from leafpipe.distill.sharded_state import PROGRESS, load_sharded_state, save_sharded_state
from leafpipe.distill.spec import DistillSpec
from leafpipe.distill.trainer import distill

SPEC = DistillSpec(lr=0.01, weight_decay=0.1)
ONE_EPOCH = DistillSpec(**TWO_ITEM_STEPS, objective="ce", epochs=1)


@pytest.fixture
def process_group(tmp_path):
    """A gloo process group of one process: FSDP2 and DCP run as in a torchrun worker."""
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def _sharded(tiny_llama, seed: int) -> tuple[ShardedStudent, torch.optim.Optimizer]:
    student = ShardedStudent(tiny_llama(seed), torch.device("cpu"))
    params = [(n, p) for n, p in student.student.named_parameters() if p.requires_grad]
    return student, make_optimizer(params, SPEC)


def _train_step(student: ShardedStudent, optimizer: torch.optim.Optimizer) -> None:
    ids = torch.randint(0, 300, (2, 8), generator=torch.Generator().manual_seed(5))
    loss = student(lambda model, x: model(x).logits.square().mean(), ids)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def _weights(student: ShardedStudent) -> dict[str, torch.Tensor]:
    return {
        n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
        for n, p in student.student.named_parameters()
    }


def _save(work, student, optimizer, step: int, fingerprint: str = "f") -> None:
    save_sharded_state(
        work,
        TrainingState(step=step, position=step),
        fingerprint=fingerprint,
        student=student,
        optimizer=optimizer,
        elapsed=2.5,
        rng=[rng_state()],
    )


def _load(work, student, optimizer, fingerprint: str = "f") -> TrainingState | None:
    return load_sharded_state(
        work, fingerprint=fingerprint, rank=0, student=student, optimizer=optimizer
    )


def test_a_sharded_state_resumes_weights_optimiser_and_position_bitwise(
    process_group, tiny_llama, tmp_path
):
    trained, optimizer = _sharded(tiny_llama, 1)
    _train_step(trained, optimizer)
    _save(tmp_path, trained, optimizer, step=1)
    saved = {p.name for p in (tmp_path / STATE_SHARDS).iterdir()}
    assert {".metadata", "__0_0.distcp", PROGRESS} <= saved  # DCP's shard files, not state.pt
    assert not (tmp_path / STATE).exists()

    resumed, resumed_optimizer = _sharded(tiny_llama, 2)  # other initial weights
    state = _load(tmp_path, resumed, resumed_optimizer)
    assert (state.step, state.position, state.elapsed) == (1, 1, 2.5)
    assert_bitwise_equal(_weights(resumed), _weights(trained))
    # AdamW's moments and step count came back too: the next step is the same step.
    _train_step(trained, optimizer)
    _train_step(resumed, resumed_optimizer)
    assert_bitwise_equal(_weights(resumed), _weights(trained))


def test_a_sharded_state_of_other_settings_is_not_loaded(
    process_group, tiny_llama, tmp_path, caplog
):
    trained, optimizer = _sharded(tiny_llama, 1)
    _train_step(trained, optimizer)
    _save(tmp_path, trained, optimizer, step=1, fingerprint="other settings")
    fresh, fresh_optimizer = _sharded(tiny_llama, 2)
    before = _weights(fresh)
    with caplog.at_level(logging.WARNING):
        assert _load(tmp_path, fresh, fresh_optimizer) is None
    assert "written with other settings" in caplog.text
    assert_bitwise_equal(_weights(fresh), before)


def test_an_interrupted_save_leaves_the_previous_state(
    process_group, tiny_llama, tmp_path, monkeypatch
):
    trained, optimizer = _sharded(tiny_llama, 1)
    _train_step(trained, optimizer)
    _save(tmp_path, trained, optimizer, step=1)
    at_step_1 = _weights(trained)
    _train_step(trained, optimizer)

    def killed(*args, **kwargs):  # the shards are written; the progress record is not
        raise KeyboardInterrupt

    monkeypatch.setattr(sharded_state, "progress_record", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, trained, optimizer, step=2)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir() if "state" in p.name] == [STATE_SHARDS]
    resumed, resumed_optimizer = _sharded(tiny_llama, 2)
    assert _load(tmp_path, resumed, resumed_optimizer).step == 1
    assert_bitwise_equal(_weights(resumed), at_step_1)


def test_the_kept_model_is_a_pretrained_folder_of_the_sharded_weights(
    process_group, tiny_llama, tokenizer, tmp_path
):
    """The trainer's `_save_model` gathers the weights alone (no optimiser state) into an
    ordinary save_pretrained folder, from which the final model folder is made."""
    trained, optimizer = _sharded(tiny_llama, 1)
    _train_step(trained, optimizer)
    run = SimpleNamespace(
        sharded=trained,
        main=True,
        work=tmp_path,
        peft=None,
        student=trained.student,
        tokenizer=tokenizer,
    )
    Checkpointing._save_model(run, LAST)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / LAST, dtype=torch.float32)
    assert_bitwise_equal(dict(loaded.named_parameters()), _weights(trained))


def test_a_run_without_fsdp_starts_afresh_from_a_sharded_state_and_says_why(
    tiny_llama, tokenizer, samples, tmp_path, caplog
):
    (tmp_path / STATE_SHARDS).mkdir()
    with caplog.at_level(logging.WARNING, logger="leafpipe.distill.trainer"):
        distill(
            None, tiny_llama(1), tokenizer, many_groups(samples, 2), ONE_EPOCH, 1, work_dir=tmp_path
        )
    assert f"{tmp_path / STATE_SHARDS} is the state of a run with fsdp" in caplog.text
    assert json.loads((tmp_path / TRAINING).read_text())["resumed_at_steps"] == []
    assert not (tmp_path / STATE_SHARDS).exists()
