"""The one adapter every rule runs: names bind to the stage exactly once, so a rule's input can
never replace its wildcard (which once applied the student's trust_remote_code to the teacher);
the job sees only the GPUs of its `gpu` resource; a retry of an error that recurs fails at once."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from leafpipe import stages
from leafpipe.config import ConfigError
from leafpipe.data.hf_dataset import DatasetUnavailable
from leafpipe.execution.adapter import NotRetried, recurs, run, stage_arguments
from leafpipe.execution.devices import GpuError
from leafpipe.stages import specs, trusts_remote_code

REPO = Path(__file__).resolve().parents[2]


class Named(dict):
    """Snakemake's Namedlist as the adapter reads it: `.items()` of name -> value."""


class Job:
    def __init__(
        self,
        rule,
        wildcards=(),
        input=(),
        output=(),
        params=(),
        config=None,
        log=None,
        resources=(),
    ):
        self.rule, self.threads = rule, 1
        self.wildcards, self.input = Named(wildcards), Named(input)
        self.output, self.params = Named(output), Named(params)
        self.config = config or {}
        self.log, self.resources = [str(log)], Named(resources)


def score(config, model, model_dir, corpus_path, out_path, shard=0, threads=None):
    """The signature of stages.score, which is what matters here."""


CONFIG = {
    "models": {"teacher": {"trust_remote_code": True}, "student": {"trust_remote_code": False}}
}


def _teacher_score_job(weights_input: str) -> Job:
    """The teacher's score job, its model folder an input named `weights_input`."""
    return Job(
        "score",
        wildcards={"model": "teacher", "shard": "0"},
        input={weights_input: "results/models/teacher", "corpus_path": "c.jsonl"},
        output={"out_path": "o.parquet"},
        params={"model_dir": "results/models/teacher"},
        config=CONFIG,
    )


def test_an_input_named_like_a_wildcard_is_refused_with_both_names():
    job = _teacher_score_job(weights_input="model")
    with pytest.raises(
        TypeError, match=r"rule 'score': input 'model' clashes with wildcards 'model'"
    ):
        stage_arguments(job, score)


def test_a_param_named_like_an_output_or_config_is_refused():
    job = Job("score", output={"out_path": "a"}, params={"out_path": "b"})
    with pytest.raises(TypeError, match=r"params 'out_path' clashes with output 'out_path'"):
        stage_arguments(job, score)
    with pytest.raises(TypeError, match=r"input 'config' clashes with the adapter 'config'"):
        stage_arguments(Job("score", input={"config": "x"}), score)


def test_the_score_rule_hands_the_stage_the_role_so_the_teacher_gets_its_own_trust():
    job = _teacher_score_job(weights_input="weights")
    args = stage_arguments(job, score)
    assert args["model"] == "teacher" and args["model_dir"] == "results/models/teacher"
    assert trusts_remote_code(args["config"], args["model"]) is True
    # The teacher's job reads the teacher's trust and cannot read the student's.
    with pytest.raises(KeyError, match=r"stage 'score' reads config key 'models.student'"):
        trusts_remote_code(args["config"], "student")
    # What the clash used to hand the stage: a path, which counted as a student.
    assert trusts_remote_code(CONFIG, "results/models/teacher") is False


# --- running a job: its GPUs, and retries of errors that recur ------------------------------


@pytest.fixture
def stage(monkeypatch, tmp_path):
    """A stage `fake` that fails with `stage.error` (when set) and records what it saw, and a
    job of it: `stage.job(attempt=1, gpu=0, allow_cpu=False)`."""

    class Stage:
        def __init__(self):
            self.error: Exception | None = None
            self.calls: list[str | None] = []  # CUDA_VISIBLE_DEVICES as each call saw it

        def __call__(self, config):
            self.calls.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
            if self.error is not None:
                raise self.error

        def job(self, attempt=1, gpu=0, allow_cpu=False):
            return Job(
                "fake",
                config={"hardware": {"allow_cpu": allow_cpu}},
                log=tmp_path / "fake.log",
                resources={"attempt": attempt, "gpu": gpu},
            )

    fake = Stage()
    monkeypatch.setattr(stages, "fake", fake, raising=False)
    monkeypatch.setitem(specs.SPECS, "fake", specs.StageSpec(()))
    monkeypatch.setenv(
        "CUDA_VISIBLE_DEVICES", "0,1"
    )  # a machine with two GPUs; restored afterwards
    monkeypatch.setenv("LEAFPIPE_GPU_LOCKS", str(tmp_path / "locks"))
    return fake


def test_a_job_sees_only_the_gpus_of_its_resource(stage, monkeypatch):
    run(stage.job(gpu=0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    run(stage.job(gpu=1))
    assert stage.calls == ["", "0"]


def test_a_gpu_job_without_cuda_fails_before_its_stage_runs(stage, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GpuError, match="rule 'fake' is given 1 GPU"):
        run(stage.job(gpu=1))
    assert stage.calls == []
    assert "rule 'fake' is given 1 GPU" in (tmp_path / "fake.log").read_text()
    run(stage.job(gpu=1, allow_cpu=True))
    assert stage.calls == [""]


def test_a_recurring_error_is_recorded_and_its_retry_fails_at_once_without_running(stage, tmp_path):
    stage.error = ValueError("scoring.shards must be >= 1")
    with pytest.raises(ValueError):
        run(stage.job(attempt=1))
    record = json.loads((tmp_path / "fake.log.no-retry").read_text())
    assert (record["rule"], record["attempt"]) == ("fake", 1)
    assert record["error"] == "ValueError: scoring.shards must be >= 1"
    (tmp_path / "fake.log").unlink()  # as Snakemake does before each attempt
    with pytest.raises(
        NotRetried,
        match=r"rule 'fake', attempt 2: not retried: the same error would recur: "
        r"ValueError: scoring.shards must be >= 1 \(attempt 1;",
    ):
        run(stage.job(attempt=2))
    assert len(stage.calls) == 1
    logged = (tmp_path / "fake.log").read_text()
    assert "not retried: the same error would recur" in logged
    assert (
        "attempt 1 of rule fake failed with:\nTraceback" in logged
    )  # the error, though the log was emptied
    assert "ValueError: scoring.shards must be >= 1" in logged


def test_an_out_of_memory_error_is_retried(stage, tmp_path):
    stage.error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(torch.OutOfMemoryError):
        run(stage.job(attempt=1))
    assert not (tmp_path / "fake.log.no-retry").exists()
    stage.error = None
    run(stage.job(attempt=2))
    assert len(stage.calls) == 2


def test_a_new_run_forgets_the_record_of_a_former_one(stage, tmp_path):
    (tmp_path / "fake.log.no-retry").write_text(
        json.dumps(
            {"rule": "fake", "attempt": 1, "error": "ValueError: x", "traceback": "ValueError: x"}
        )
    )
    run(stage.job(attempt=1))  # the config was fixed and snakemake started again
    assert len(stage.calls) == 1 and not (tmp_path / "fake.log.no-retry").exists()


def _raised(f):
    try:
        f()
    except Exception as err:
        return err
    raise AssertionError("no error")


@pytest.mark.parametrize(
    "err",
    [
        ConfigError("config: distill.global_batch must be a multiple of distill.micro_batch"),
        ValueError("no samples to distill"),
        KeyError("teacher"),
        TypeError("rule 'score' does not provide ['weights'] to leafpipe.stages.score"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "models/teacher.gguf"),
        DatasetUnavailable("dataset AI-MO/NuminaMath-CoT: the hub is off and it is not cached"),
        _raised(lambda: torch.zeros(2, 3) @ torch.zeros(2, 3)),
        _raised(lambda: torch.zeros(2) + torch.zeros(3)),
        _raised(lambda: torch.stack([torch.zeros(2), torch.zeros(2, device="meta")])),
        # torch's words for the multi-GPU crashes of issue 20, which a CPU cannot raise
        RuntimeError(
            "Expected all tensors to be on the same device, "
            "but found at least two devices, cuda:3 and cuda:0!"
        ),
    ],
    ids=lambda err: type(err).__name__,
)
def test_errors_of_config_inputs_shapes_and_devices_recur(err):
    assert recurs(err)


@pytest.mark.parametrize(
    "err",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError(
            "[Rank 1] Watchdog caught collective operation timeout: "
            "WorkNCCL(SeqNum=9, OpType=ALLREDUCE)"
        ),
        RuntimeError(
            "2-process distill failed (exit code 1); the processes' errors are in the log above"
        ),
        RuntimeError("CUDA error: unspecified launch failure"),
        OSError(errno.ENOSPC, "No space left on device"),
        GpuError("rule 'score' needs 1 free GPU(s) of 0, but other jobs held them for 60.0 min"),
    ],
    ids=lambda err: type(err).__name__,
)
def test_out_of_memory_timeouts_and_node_faults_may_not_recur(err):
    assert not recurs(err)


def test_importing_the_adapter_initialises_no_cuda():
    """A job's devices are chosen after the adapter is imported (by workflow/scripts/run_stage.py)
    and before CUDA reads CUDA_VISIBLE_DEVICES, which it does once, when it initialises."""
    code = (
        "import torch\n"
        "called = []\n"
        "for name in ('is_available', 'device_count', 'init', '_lazy_init', 'current_device', "
        "'mem_get_info'):\n"
        "    setattr(torch.cuda, name, lambda *a, name=name, **k: called.append(name))\n"
        "import leafpipe.execution.adapter\n"
        "print(called)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
