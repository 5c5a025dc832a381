"""The GPU placement policy (leafpipe.execution.devices, stages.load_placed_model): a job sees
exactly the GPUs it was given, two jobs never share one, a `gpu: 0` job sees none, and a GPU job
without CUDA fails at once unless the config allows the CPU. Devices are faked: a parent
CUDA_VISIBLE_DEVICES list stands for the machine's GPUs, and torch.cuda is told it works."""

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from leafpipe import stages
from leafpipe.execution import devices
from leafpipe.execution.devices import VISIBLE, GpuError, claim_gpus
from leafpipe.models import loading
from leafpipe.text.tokenizer import save_tokenizer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cuda(monkeypatch):
    """CUDA that works on whatever devices a claim leaves visible."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def machine(gpus: str) -> dict[str, str]:
    """The environment of a job on a machine whose GPUs are `gpus` ("0,1,2")."""
    return {VISIBLE: gpus}


def test_gpu_0_hides_every_gpu(tmp_path):
    env = machine("0,1")
    claim = claim_gpus(0, rule="score", env=env, locks=tmp_path)
    assert claim.devices == () and env[VISIBLE] == ""
    assert list(tmp_path.iterdir()) == []


def test_two_claims_never_get_the_same_device(tmp_path, cuda):
    first, second, third = machine("0,1,2"), machine("0,1,2"), machine("0,1,2")
    a = claim_gpus(1, rule="score", env=first, locks=tmp_path)
    b = claim_gpus(2, rule="distill", env=second, locks=tmp_path)
    assert (first[VISIBLE], second[VISIBLE]) == ("0", "1,2")
    with pytest.raises(GpuError, match=r"rule 'generate' needs 1 free GPU\(s\) of 0, 1, 2"):
        claim_gpus(1, rule="generate", env=third, locks=tmp_path, wait_s=0)
    a.release()
    assert claim_gpus(1, rule="generate", env=third, locks=tmp_path, wait_s=0).devices == ("0",)
    b.release()


def test_a_dead_process_claim_is_free_again(tmp_path, cuda):
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from leafpipe.execution import devices\n"
            "devices._cuda_usable = lambda: True  # as the fixture, without importing torch\n"
            "env = {'CUDA_VISIBLE_DEVICES': '0,1'}\n"
            "claim = devices.claim_gpus(1, rule='child', env=env, locks=Path(sys.argv[1]))\n"
            "print(env['CUDA_VISIBLE_DEVICES'], flush=True)\n"
            "sys.stdin.read()  # holds the claim until killed\n",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout.readline().strip() == "0"
        with pytest.raises(GpuError, match="needs 2 free GPU"):
            claim_gpus(2, rule="distill", env=machine("0,1"), locks=tmp_path, wait_s=0)
    finally:
        child.kill()
        child.wait()
    assert claim_gpus(2, rule="distill", env=machine("0,1"), locks=tmp_path, wait_s=0).devices == (
        "0",
        "1",
    )


def test_a_busy_device_is_waited_for_not_shared(tmp_path, cuda, caplog):
    held = claim_gpus(1, rule="score", env=machine("0"), locks=tmp_path)
    threading.Timer(0.3, held.release).start()
    env = machine("0")
    with caplog.at_level(logging.INFO, logger="leafpipe.execution.devices"):
        claim = claim_gpus(1, rule="generate", env=env, locks=tmp_path, wait_s=60, poll_s=0.05)
    assert claim.devices == ("0",) and env[VISIBLE] == "0"
    assert "rule generate waits for 1 free GPU(s) of 0" in caplog.text
    claim.release()


def test_more_gpus_than_the_machine_has_are_refused_at_once(tmp_path, cuda):
    with pytest.raises(GpuError, match=r"rule 'distill' asks for 4 GPUs but this machine has 2"):
        claim_gpus(4, rule="distill", env=machine("0,1"), locks=tmp_path, wait_s=3600)


def test_a_gpu_job_without_cuda_fails_at_once_naming_the_rule_and_the_fixes(tmp_path, monkeypatch):
    fixes = r"hardware: \{allow_cpu: true\}.*resources: \{score: \{gpu: 0\}\}"
    with pytest.raises(
        GpuError,
        match=rf"rule 'score' is given 1 GPU\(s\), but no NVIDIA device is visible.*{fixes}",
    ):
        claim_gpus(1, rule="score", env=machine(""), locks=tmp_path)
    monkeypatch.setattr(
        torch.cuda, "is_available", lambda: False
    )  # devices, but no CUDA to use them
    with pytest.raises(GpuError, match=rf"CUDA cannot use device\(s\) 0.*{fixes}"):
        claim_gpus(1, rule="score", env=machine("0"), locks=tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert claim_gpus(1, rule="score", env=machine("0"), locks=tmp_path, wait_s=0).devices == (
        "0",
    ), "the refused job kept its lock"


def test_allow_cpu_runs_a_gpu_job_on_the_cpu_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for gpus in ("", "0"):
        env = machine(gpus)
        claim = claim_gpus(1, rule="distill", allow_cpu=True, env=env, locks=tmp_path)
        assert claim.devices == () and env[VISIBLE] == ""
    assert (
        "rule distill is given 1 GPU(s)" in caplog.text
        and "runs on the CPU in float32" in caplog.text
    )


def test_slurm_devices_are_used_as_given_and_an_allocation_shared_by_jobs_is_claimed(
    tmp_path, cuda
):
    env = {"SLURM_JOB_ID": "42", VISIBLE: "2,3"}
    assert claim_gpus(2, rule="distill", env=env, locks=tmp_path).devices == ("2", "3")
    assert env[VISIBLE] == "2,3" and list(tmp_path.iterdir()) == []
    # several jobs in one allocation (snakemake inside salloc): each claims its own share
    a = claim_gpus(1, rule="score", env=dict(env), locks=tmp_path)
    b = claim_gpus(1, rule="score", env=dict(env), locks=tmp_path)
    assert {a.devices, b.devices} == {("2",), ("3",)}
    assert devices.lock_dir({"SLURM_JOB_ID": "42"}) != devices.lock_dir({})


def test_without_a_parent_list_the_device_files_are_the_gpus(monkeypatch, tmp_path, cuda):
    files = [
        "/dev/nvidia10",
        "/dev/nvidia1",
        "/dev/nvidia0",
    ]  # what glob finds for /dev/nvidia[0-9]*
    monkeypatch.setattr(devices.glob, "glob", lambda pattern: files)
    assert devices.physical_devices({}) == ["0", "1", "10"]
    env: dict[str, str] = {}
    claim_gpus(2, rule="distill", env=env, locks=tmp_path).release()
    # the order nvidia-smi uses, so that lock gpu-k.lock is the GPU it calls k
    assert env == {VISIBLE: "0,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert devices.lock_dir({devices.LOCKS_ENV: str(tmp_path)}) == tmp_path


def test_torchrun_processes_inherit_the_claimed_devices(tmp_path, cuda, monkeypatch):
    """parallel.launch starts its processes with this process's environment, so process
    LOCAL_RANK k (`torch.cuda.set_device(k)` in parallel.setup) uses the k-th claimed GPU."""
    from leafpipe.distill import parallel

    started = []

    def torchrun(command, env, **options):
        started.append(env)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(parallel.subprocess, "run", torchrun)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(os.environ[VISIBLE].split(",")))
    monkeypatch.setenv(VISIBLE, "0,1,2")  # the machine's; restored afterwards
    other = claim_gpus(1, rule="score", env=machine("0,1,2"), locks=tmp_path)
    with claim_gpus(2, rule="distill", locks=tmp_path):
        parallel.launch(2, "distill", {}, {"variant": "kd"})
    assert started[0][VISIBLE] == "1,2"
    other.release()


# --- stages.load_placed_model --------------------------------------------------------------


@pytest.fixture
def model_dir(tiny_llama, tokenizer, tmp_path):
    path = tmp_path / "model"
    save_tokenizer(tokenizer, path)
    tiny_llama(0).save_pretrained(path)
    return path


def test_without_gpus_a_model_is_placed_on_the_cpu_in_float32(model_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    model, _ = stages.load_placed_model(model_dir)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cpu", torch.float32)}
    assert not model.training


@pytest.mark.parametrize("gpus", [1, 2])
def test_a_model_goes_whole_onto_one_gpu_and_balanced_over_several_without_cpu_offload(
    model_dir, monkeypatch, gpus
):
    calls = []

    class Placed(Exception):
        """Stops loading: the placement asked for is what is checked."""

    def load_model(path, dtype, **options):
        calls.append((dtype, options))
        raise Placed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (80 << 30, 80 << 30))
    monkeypatch.setattr(loading, "load_model", load_model)
    with pytest.raises(Placed):
        stages.load_placed_model(model_dir)
    ((dtype, options),) = calls
    assert dtype == torch.bfloat16
    if gpus == 1:
        assert options["device_map"] == {"": 0}
    else:
        assert options["device_map"] == "balanced" and set(options["max_memory"]) == {0, 1}


def test_a_model_too_large_for_the_jobs_gpus_is_refused_not_run_from_disk(model_dir, monkeypatch):
    """A budget of 1 KB per GPU: transformers would offload every layer to disk and run it from
    there; "auto" (the old placement) would put it on the CPU."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (1024, 80 << 30))
    with pytest.raises(
        ValueError, match=r"does not fit in the free memory of the job's 2 GPU\(s\).*disk"
    ):
        stages.load_placed_model(model_dir)
