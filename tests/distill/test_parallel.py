"""Data-parallel distillation (leafpipe.distill.parallel): two processes train exactly what one
does."""

import json
from dataclasses import asdict
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from distill_groups import many_groups
from distill_runs import (
    assert_bitwise_equal,
    distill_command,
    kill_at_first_checkpoint,
    resume_and_reference,
    stage_inputs,
)
from safetensors.torch import load_file
from torch.distributed import fsdp
from transformers import AutoModelForCausalLM

from leafpipe import stages
from leafpipe.config import validate_config
from leafpipe.distill import parallel
from leafpipe.distill.checkpoints import STATE, STATE_SHARDS, run_fingerprint
from leafpipe.distill.data import encode_groups, rank_share
from leafpipe.distill.sharded_state import PROGRESS
from leafpipe.distill.spec import DistillSpec
from leafpipe.distill.trainer import distill

# 12 groups, about 2 held out: steps of 4 groups, the last one smaller, so some processes get
# an uneven share or none; micro-batches of 1 make each process accumulate.
DISTILL = {
    "epochs": 2,
    "global_batch": 4,
    "micro_batch": 1,
    "lr": 0.003,
    "val_fraction": 0.2,
    "checkpoint_every": 1,
}


def test_rank_shares_split_a_step_and_one_process_gets_the_step():
    step = [[5, 3], [8, 1], [2]]
    assert rank_share(step, 0, 1, 2) == step
    shares = [rank_share(step, r, 2, 2) for r in range(2)]
    assert shares == [[[5, 8], [2]], [[3, 1]]]
    assert rank_share([[7]], 1, 2, 2) == []  # a process may get nothing of a small step
    for share in shares:
        assert all(len(micro) <= 2 for micro in share)


def _weights(folder):
    return load_file(folder / "model.safetensors")


@pytest.mark.parametrize(
    "fsdp, checkpointing",
    [(False, False), (True, False), (True, True)],
    ids=["replicated", "fsdp", "fsdp-checkpointing"],
)
def test_two_processes_train_the_weights_of_one(
    tiny_llama, tokenizer, samples, tmp_path, fsdp, checkpointing, capfd
):
    """Uneven shares (10 groups in steps of 4), counterfactuals on some processes only, and a
    validation set: sharded, the processes short of work make weight-0 passes in step."""
    # No dropout: its masks are drawn per process, so with it the runs would differ by design.
    raw, args = stage_inputs(tiny_llama, tokenizer, samples, tmp_path, 12, DISTILL, dropout=0.0)
    one, two = tmp_path / "one", tmp_path / "two"
    stages.distill(
        validate_config(raw), **args, out_dir=one, checkpoint_dir=tmp_path / "w1", threads=1
    )
    parallel = validate_config(
        {
            **raw,
            "distill": {
                **raw["distill"],
                "gpus": 2,
                "fsdp": fsdp,
                "gradient_checkpointing": checkpointing,
            },
        }
    )
    stages.distill(parallel, **args, out_dir=two, checkpoint_dir=tmp_path / "w2", threads=2)
    assert ("the student sharded over them (FSDP2)" in capfd.readouterr().err) == fsdp
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    for name in a:  # the same gradients, summed in another order
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=2e-6)
    assert any(
        not torch.equal(a[n], load_file(args["student_dir"] / "model.safetensors")[n]) for n in a
    )
    info_one, info_two = (json.loads((d / "training.json").read_text()) for d in (one, two))
    assert (info_one["processes"], info_two["processes"]) == (1, 2)
    assert info_one["steps"] == info_two["steps"] and info_two["groups_validation"] > 0
    rows = [
        [line.split(",") for line in (d / "metrics.csv").read_text().splitlines()[1:]]
        for d in (one, two)
    ]
    assert len(rows[0]) == len(rows[1])
    # The loss column: every step's and epoch's loss (and validation loss) is the whole step's.
    loss = 4
    for r1, r2 in zip(*rows):
        assert r1[:3] == r2[:3] and float(r1[loss]) == pytest.approx(float(r2[loss]), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp"])
def test_killed_two_process_run_resumes_bitwise(tiny_llama, tokenizer, samples, tmp_path, fsdp):
    """SIGKILL to the whole process group after the first checkpoint; rerun, it resumes every
    process (weights, optimiser, each one's RNG: the student has dropout) and ends where an
    uninterrupted two-process run ends. Sharded, each process saved its own shards (no full
    state.pt gathered on process 0), and the final model is an ordinary save_pretrained
    folder."""
    raw, args = stage_inputs(
        tiny_llama, tokenizer, samples, tmp_path, 12, {**DISTILL, "gpus": 2, "fsdp": fsdp}
    )
    out, work = tmp_path / "models" / "leaf_instr", tmp_path / "work"
    kill_at_first_checkpoint(distill_command(tmp_path, args, out, work, threads=2), out, work, 180)
    shards = work / STATE_SHARDS
    assert (work / STATE).exists() != fsdp and shards.exists() == fsdp
    if fsdp:
        saved = {p.name for p in shards.iterdir()}
        assert {".metadata", "__0_0.distcp", "__1_0.distcp", PROGRESS} <= saved, saved
    reference = resume_and_reference(raw, args, tmp_path, out, work, threads=2)
    resumed = json.loads((out / "training.json").read_text())
    assert resumed["resumed_at_steps"] and resumed["processes"] == 2
    assert_bitwise_equal(_weights(out), _weights(reference))
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
    assert_bitwise_equal({n: loaded[n] for n in _weights(out)}, _weights(reference))


def test_fsdp_with_lora_is_a_clear_error():
    from leafpipe.distill.spec import DistillSpec, LoraSpec

    with pytest.raises(ValueError, match="fsdp shards a fully trained student"):
        DistillSpec(fsdp=True, lora=LoraSpec())


def test_the_collective_timeout_reaches_init_process_group(monkeypatch):
    """A torchrun worker (WORLD_SIZE 2) joins the process group with the timeout it is given,
    not NCCL's 10-minute default."""
    joined = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(parallel, "die_with_parent", lambda: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: joined.append(kwargs))
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert parallel.setup(timedelta(minutes=7)) == (0, 2, torch.device("cpu"))
    assert joined == [{"backend": "gloo", "timeout": timedelta(minutes=7)}]


def test_the_trainer_joins_with_the_configured_timeout(tokenizer, samples, tiny_llama, monkeypatch):
    # The torchrun workers read the same config (parallel.launch writes it for them).
    given = []
    setup = parallel.setup
    monkeypatch.setattr(parallel, "setup", lambda timeout: given.append(timeout) or setup(timeout))
    config = validate_config(
        {
            "models": {"teacher": {}, "student": {}},
            "distill": {"collective_timeout_min": 7, "epochs": 1, "val_fraction": 0},
        }
    )
    spec = DistillSpec.from_config(config["distill"], objective="ce", seed=0)
    distill(None, tiny_llama(1), tokenizer, many_groups(samples, 2), spec, 1)
    assert given == [timedelta(minutes=7)]


def test_the_collective_timeout_changes_no_tracked_setting(tokenizer, samples, tiny_llama):
    """Raising it after a timed-out job neither reruns the distill rule (its settings param
    leaves the stage spec's DISTILL_EXECUTION out) nor discards the job's resumable state (its
    fingerprint)."""
    from leafpipe.stages.specs import DISTILL_EXECUTION

    assert "distill.collective_timeout_min" in DISTILL_EXECUTION
    encoded, student = encode_groups(tokenizer, many_groups(samples, 2)), tiny_llama(1)
    prints = {
        run_fingerprint(asdict(DistillSpec(collective_timeout_min=m)), [], encoded, (student,))
        for m in (10, 600)
    }
    assert len(prints) == 1


def test_fsdp_computes_in_bf16_on_cuda_and_in_fp32_on_the_cpu(tiny_llama, monkeypatch):
    calls = []
    monkeypatch.setattr(
        fsdp, "fully_shard", lambda module, **kwargs: calls.append(kwargs) or module
    )
    parallel.ShardedStudent(tiny_llama(1), torch.device("cuda"))
    *layers, root = (call["mp_policy"] for call in calls)
    assert len(layers) == 2  # one unit per decoder layer, then the root
    for policy in (*layers, root):
        assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    # The layers compute on bf16 inputs; the root's inputs include a top-k cache kept in fp32.
    assert all(policy.cast_forward_inputs for policy in layers) and not root.cast_forward_inputs
    calls.clear()
    parallel.ShardedStudent(tiny_llama(1), torch.device("cpu"))
    assert len(calls) == 3 and all(
        call["mp_policy"] == fsdp.MixedPrecisionPolicy() for call in calls
    )
