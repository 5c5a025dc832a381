"""A killed distillation resumes from its checkpoint and ends bit for bit where an uninterrupted
run ends; a checkpoint of other settings, data or models is never resumed."""

import csv
import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
from distill_groups import TWO_ITEM_STEPS, many_groups
from distill_runs import (
    assert_bitwise_equal,
    distill_command,
    kill_at_first_checkpoint,
    resume_and_reference,
    stage_inputs,
)
from safetensors.torch import load_file

from leafpipe.distill.checkpoints import TrainingState, load_state, save_state
from leafpipe.distill.data import MODES
from leafpipe.distill.spec import DistillSpec
from leafpipe.distill.trainer import _Trainer, distill


class Killed(Exception):
    """Stands for SIGKILL inside the test process: training stops wherever it is."""


# 8 groups, g1 and g4 held out: 6 train, two of them with a counterfactual. Steps of 2 items
# (micro-batches of 1): with counterfactuals "all", 8 samples, 4 steps per epoch, 8 in all,
# checkpoints after steps 2, 4, 6, 8 and at the epoch ends (4, 8); with "draw_one", 6 groups, 3
# steps per epoch, 6 in all, checkpoints after 2, 4, 6 and at the epoch ends (3, 6). The student
# has attention dropout, so a resume that lost the RNG state would differ.
SPEC = DistillSpec(
    **TWO_ITEM_STEPS, epochs=2, val_fraction=0.5, keep="best", checkpoint_every=2, seed=3
)
STEPS = {"all": 8, "draw_one": 6}


@pytest.fixture(params=MODES)
def spec(request) -> DistillSpec:
    """SPEC in each counterfactual scheme: resume must be exact in both."""
    return DistillSpec(**{**SPEC.__dict__, "counterfactuals": request.param})


def run(
    tiny_llama,
    tokenizer,
    groups,
    work,
    spec=SPEC,
    kill_at=None,
    retrained=None,
    taken=None,
):
    """Distill; `kill_at`: raise Killed after that step; `retrained` ("student" or "teacher"):
    that model with one weight tensor changed, as a retrained model of the same architecture
    has; `taken`: a list the optimiser steps this run takes are appended to, so that a resume
    can be told from a redo by its work."""

    def on_step(step, row):
        if taken is not None:
            taken.append(step)
        if step == kill_at:
            raise Killed(step)

    models = {"teacher": tiny_llama(0), "student": tiny_llama(1, attention_dropout=0.2)}
    if retrained is not None:
        with torch.no_grad():
            models[retrained].model.norm.weight.mul_(1.5)
    return distill(
        models["teacher"],
        models["student"],
        tokenizer,
        groups,
        spec,
        1,
        work_dir=work,
        on_step=on_step,
    )


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def metric_rows(work: Path) -> list[dict[str, str]]:
    with open(work / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(fh)]


@pytest.fixture
def reference(tiny_llama, tokenizer, samples, tmp_path, spec):
    """The uninterrupted run: its weights, metrics and best checkpoint."""
    work = tmp_path / "reference"
    model = run(tiny_llama, tokenizer, many_groups(samples), work, spec=spec)
    return params(model), metric_rows(work), load_file(work / "best" / "model.safetensors")


@pytest.mark.parametrize(
    "kill_at", [1, 3, 5], ids=["before-any-checkpoint", "after-a-checkpoint", "after-two"]
)
def test_resumed_run_equals_uninterrupted_run_bitwise(
    tiny_llama, tokenizer, samples, tmp_path, reference, kill_at, caplog, spec
):
    work = tmp_path / "killed"
    with pytest.raises(Killed):
        run(tiny_llama, tokenizer, many_groups(samples), work, spec=spec, kill_at=kill_at)
    assert (work / "state.pt").exists() == (kill_at >= 2)
    taken = []
    with caplog.at_level(logging.INFO, logger="leafpipe.distill.trainer"):
        model = run(tiny_llama, tokenizer, many_groups(samples), work, spec=spec, taken=taken)
    resumed_from = {1: None, 3: 2, 5: 4}[kill_at]
    # The resumed run takes the steps after its checkpoint's, and those alone.
    assert taken == list(range((resumed_from or 0) + 1, STEPS[spec.counterfactuals] + 1))
    training = json.loads((work / "training.json").read_text())
    assert training["resumed_at_steps"] == ([] if resumed_from is None else [resumed_from])
    if resumed_from is not None:
        assert f"resuming from {work / 'state.pt'} at step {resumed_from}" in caplog.text
    ref_params, ref_metrics, ref_best = reference
    assert_bitwise_equal(params(model), ref_params)
    # Steps redone after the restart appear once, with the values of the uninterrupted run.
    assert metric_rows(work) == ref_metrics
    assert_bitwise_equal(load_file(work / "best" / "model.safetensors"), ref_best)


def test_kill_between_epoch_end_checkpoints_resumes_bitwise(
    tiny_llama, tokenizer, samples, tmp_path, reference, monkeypatch, spec
):
    """Killed after best/ of epoch 2 is saved but before last/ and the epoch-end state."""
    save = _Trainer._save_model
    calls = []

    def save_then_die(self, name):
        calls.append(name)
        if name == "last" and len(calls) > 2:
            raise Killed(name)
        save(self, name)

    work = tmp_path / "killed"
    monkeypatch.setattr(_Trainer, "_save_model", save_then_die)
    with pytest.raises(Killed):
        run(tiny_llama, tokenizer, many_groups(samples), work, spec=spec)
    monkeypatch.setattr(_Trainer, "_save_model", save)
    model = run(tiny_llama, tokenizer, many_groups(samples), work, spec=spec)
    assert json.loads((work / "training.json").read_text())["resumed_at_steps"] == [
        STEPS[spec.counterfactuals]
    ]
    assert_bitwise_equal(params(model), reference[0])
    assert metric_rows(work) == reference[1]


def test_resume_needs_the_rng_state(
    tiny_llama, tokenizer, samples, tmp_path, reference, monkeypatch, spec
):
    """The control for the tests above: with the RNG state not restored, the student's dropout
    draws other masks after the restart and the weights differ, so bitwise equality is a real
    check."""
    work = tmp_path / "killed"
    with pytest.raises(Killed):
        run(tiny_llama, tokenizer, many_groups(samples), work, spec=spec, kill_at=5)
    monkeypatch.setattr(torch, "set_rng_state", lambda state: None)
    model = run(tiny_llama, tokenizer, many_groups(samples), work, spec=spec)
    assert params(model).keys() == reference[0].keys()
    assert any(not torch.equal(p, reference[0][n]) for n, p in params(model).items())


def _one_response_changed(groups):
    """`groups` with one trained group's response changed: the same groups, split and steps."""
    (instruction, response), group = groups[2].original, groups[2]
    return [
        *groups[:2],
        dataclasses.replace(group, original=(instruction, response.replace("4", "5"))),
        *groups[3:],
    ]


@pytest.mark.parametrize("change", ["settings", "data", "student", "teacher"])
def test_checkpoint_of_other_settings_data_or_models_is_not_resumed(
    tiny_llama, tokenizer, samples, tmp_path, change, caplog
):
    """The run restarts from step 1 and ends as a fresh run does."""
    groups = many_groups(samples)
    work = tmp_path / "work"
    with pytest.raises(Killed):
        run(tiny_llama, tokenizer, groups, work, kill_at=5)
    spec, retrained = SPEC, None
    if change == "settings":
        spec = DistillSpec(**{**SPEC.__dict__, "lr": 1e-3})
    elif change == "data":
        groups = _one_response_changed(groups)
    else:
        retrained = change
    taken = []
    with caplog.at_level(logging.WARNING, logger="leafpipe.distill.checkpoints"):
        model = run(
            tiny_llama, tokenizer, groups, work, spec=spec, retrained=retrained, taken=taken
        )
    assert "written with other settings, data or models; starting afresh" in caplog.text
    assert taken == list(range(1, STEPS["all"] + 1))
    assert json.loads((work / "training.json").read_text())["resumed_at_steps"] == []
    fresh = run(tiny_llama, tokenizer, groups, tmp_path / "fresh", spec=spec, retrained=retrained)
    assert_bitwise_equal(params(model), params(fresh))


def test_checkpoint_cadence_is_not_part_of_the_settings(
    tiny_llama, tokenizer, samples, tmp_path, reference, spec
):
    work = tmp_path / "killed"
    with pytest.raises(Killed):
        run(tiny_llama, tokenizer, many_groups(samples), work, spec=spec, kill_at=5)
    spec = DistillSpec(**{**spec.__dict__, "checkpoint_every": 1, "log_every": 1})
    model = run(tiny_llama, tokenizer, many_groups(samples), work, spec=spec)
    assert json.loads((work / "training.json").read_text())["resumed_at_steps"] == [4]
    assert_bitwise_equal(params(model), reference[0])


# --- the stage, killed for real -----------------------------------------------------------------


def test_sigkilled_stage_leaves_no_output_and_resumes_bitwise(
    tiny_llama, tokenizer, samples, tmp_path
):
    """`leafpipe distill` killed with SIGKILL after its first checkpoint: no model folder
    appears; rerun, it resumes and writes the weights of an uninterrupted run."""
    raw, args = stage_inputs(
        tiny_llama,
        tokenizer,
        samples,
        tmp_path,
        24,
        {
            "epochs": 3,
            "global_batch": 2,
            "micro_batch": 1,
            "lr": 0.003,
            "val_fraction": 0.2,
            "checkpoint_every": 1,
        },
    )

    out, work = tmp_path / "models" / "leaf_instr", tmp_path / "checkpoints" / "leaf_instr"
    kill_at_first_checkpoint(distill_command(tmp_path, args, out, work, threads=1), out, work, 120)
    reference_out = resume_and_reference(raw, args, tmp_path, out, work, threads=1)
    resumed = json.loads((out / "training.json").read_text())
    assert resumed["resumed_at_steps"] and resumed["resumed_at_steps"][0] >= 1
    assert resumed["variant"] == "leaf_instr"
    assert_bitwise_equal(
        load_file(out / "model.safetensors"), load_file(reference_out / "model.safetensors")
    )
    assert not (work / "state.pt").exists()  # done: a rerun would train afresh


def test_lora_run_resumes_bitwise(tiny_llama, tokenizer, samples, tmp_path):
    from leafpipe.distill.spec import LoraSpec

    spec = DistillSpec(**{**SPEC.__dict__, "lr": 1e-2, "lora": LoraSpec(r=4, alpha=8, dropout=0.1)})
    reference = run(tiny_llama, tokenizer, many_groups(samples), tmp_path / "reference", spec=spec)
    work = tmp_path / "killed"
    with pytest.raises(Killed):
        run(tiny_llama, tokenizer, many_groups(samples), work, spec=spec, kill_at=5)
    model = run(tiny_llama, tokenizer, many_groups(samples), work, spec=spec)
    assert json.loads((work / "training.json").read_text())["resumed_at_steps"] == [4]
    assert_bitwise_equal(params(model), params(reference))
    assert not torch.equal(
        params(model)["model.layers.0.self_attn.q_proj.weight"],
        params(tiny_llama(1))["model.layers.0.self_attn.q_proj.weight"],
    )


class FakeGpus:
    """torch.cuda's RNG for `count` visible GPUs, this process on GPU `current`, without any GPU:
    each GPU's generator state is a distinct tensor, and a GPU outside the visible ones fails as
    in torch (`torch.cuda.default_generators[i]`: IndexError)."""

    def __init__(self, monkeypatch, count: int, current: int = 0):
        self.count, self.current = count, current
        self.states = {i: torch.full((8,), 10 * count + i, dtype=torch.uint8) for i in range(count)}
        for module in (
            torch.cuda,
            torch.cuda.random,
        ):  # get_rng_state_all calls torch.cuda.random's
            monkeypatch.setattr(module, "get_rng_state", self.get)
            monkeypatch.setattr(module, "set_rng_state", self.set)
            monkeypatch.setattr(module, "device_count", lambda: count)
            monkeypatch.setattr(module, "current_device", lambda: current)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def _index(self, device) -> int:
        index = device if isinstance(device, int) else torch.device(device).index
        index = self.current if index is None else index
        if index >= self.count:
            raise IndexError("list index out of range")
        return index

    def get(self, device="cuda"):
        return self.states[self._index(device)].clone()

    def set(self, state, device="cuda"):
        self.states[self._index(device)] = state.clone()


def test_rng_state_is_the_trained_gpus_and_resumes_on_fewer_gpus(tmp_path, monkeypatch):
    """A process of a 2-GPU run saves the state of the GPU it trains on (its current device); a
    resume that sees one GPU restores it there. Saving every visible GPU's state made that resume
    fail: there is no second GPU to restore the second state to."""
    saving = FakeGpus(monkeypatch, count=2, current=1)
    save_state(tmp_path, TrainingState(), fingerprint="f", trainable={}, optimizer={}, elapsed=0.0)
    trained = saving.states[1]
    resuming = FakeGpus(monkeypatch, count=1)
    assert load_state(tmp_path, fingerprint="f") is not None
    assert torch.equal(resuming.states[0], trained)
