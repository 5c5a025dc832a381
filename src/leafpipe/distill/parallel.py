"""Data-parallel training: one process per GPU (torchrun), gradients summed once per optimiser step.

Every process holds the whole student (and teacher), computes the same epoch plan, and trains
its share of each optimiser step's groups (`data.rank_share`). Each loss term is divided
by the trained tokens of the *whole* step before backward, so summing the processes' gradients
(one all-reduce per step, in buckets) gives exactly the gradient a single process would compute
for that step, whatever the split, uneven or empty shares included. That is what DDP does,
without its per-backward hooks, which the two backward passes of a LeaF micro-batch (original,
then counterfactual) and gradient accumulation would otherwise have to work around. Weights
then stay equal on every process, since all apply the same update to the same gradient.

With `distill.fsdp` the student is sharded instead of replicated (`ShardedStudent`, FSDP2's
`fully_shard`): each process holds 1/N of its weights, gradients and optimiser state, and
gathers a layer's weights only while it runs. Gradients are then reduce-scattered after every
backward pass, and every process must make the same passes in the same order (a process with
no work left in a step makes a pass with weight 0), since each pass gathers weights collectively.

Process 0 writes checkpoints, metrics and the final model (sharded, every process writes its
own shards of the resumable state); the others only train, and wait for it in the next
collective: `setup`'s timeout (`distill.collective_timeout_min`) must outlast the longest
checkpoint write. Without CUDA the processes use the gloo backend on the CPU (this is how
the tests run it).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from torch.distributed.fsdp import MixedPrecisionPolicy

log = logging.getLogger(__name__)

BUCKET_ELEMENTS = 1 << 25  # 32M gradient entries (128 MiB in fp32) per all-reduce


def launched() -> bool:
    """Whether this process is one of several started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(timeout: timedelta) -> tuple[int, int, torch.device]:
    """(rank, number of processes, device) of this process; joins the process group on first call.

    A single process is rank 0 of 1, on the GPU when one is visible. `timeout` bounds one
    collective: a process waiting longer (e.g. for process 0 writing a checkpoint) fails the job,
    where NCCL's default watchdog would allow 10 minutes.
    """
    cuda = torch.cuda.is_available()
    if not launched():
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    die_with_parent()  # torchrun starts workers in sessions of their own (see launch)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
    rank = dist.get_rank()
    if rank:  # one log, written by process 0; the others report only problems
        logging.getLogger("leafpipe").setLevel(logging.WARNING)
    return rank, dist.get_world_size(), torch.device("cuda", local) if cuda else torch.device("cpu")


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere nothing).

    A job killed by Snakemake, SLURM or a user is killed as a process group, but torchrun
    starts its workers in sessions of their own: without this, they would train on and write
    the output of a job that has already been reported as failed.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call
        os._exit(1)


def sum_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum each parameter's gradient over the processes, in place; a missing gradient counts as
    0."""
    if not dist.is_initialized():
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads:
        bucket.append(g)
        size += g.numel()
        if size >= BUCKET_ELEMENTS:
            _all_reduce_bucket(bucket)
            bucket, size = [], 0
    if bucket:
        _all_reduce_bucket(bucket)


def _all_reduce_bucket(grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_values(values: Sequence[float], device: torch.device) -> list[float]:
    """The sums of `values` over the processes (the values themselves in a single process)."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def local_value(t: torch.Tensor) -> float:
    """A scalar tensor's value; a DTensor's (e.g. a sharded model's gradient norm) in full."""
    from torch.distributed.tensor import DTensor

    return (t.full_tensor() if isinstance(t, DTensor) else t).item()


def gather_objects(obj: Any) -> list[Any]:
    """`obj` of every process, in rank order (a list of one in a single process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def from_main(obj: Any) -> Any:
    """Process 0's `obj`, on every process (`obj` itself in a single process)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def is_main() -> bool:
    """Whether this is process 0 (or the only process): the one that writes outputs."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mixed_precision(device: torch.device, *, cast_inputs: bool) -> MixedPrecisionPolicy:
    """FSDP2's `MixedPrecisionPolicy` for a unit on `device`.

    CUDA: weights gathered in bf16 (half the all-gather traffic of fp32, and the bf16 GEMMs that
    autocast would run anyway), gradients reduce-scattered in fp32 so that summing N processes'
    gradients rounds no more than one process's. `cast_inputs` casts a unit's floating-point
    inputs to bf16: wanted for the decoder layers, not for the root, whose inputs include a
    teacher top-k cache whose fp32 log-probabilities must stay fp32. The residual stream is then
    bf16 (the bf16 embeddings start it), where a single process's fp32 weights keep it fp32 under
    autocast; the loss still does its softmax arithmetic in fp32 (`leafpipe.distill.kd_loss`).
    CPU (gloo, the tests): fp32 throughout, FSDP's default. A single process on the CPU trains in
    fp32 (no autocast), and the tests check that a sharded run trains its weights to within fp32
    rounding; bf16 would only add rounding there, as CPU bf16 products are no faster.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if device.type != "cuda":
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=cast_inputs
    )


class _Forward(nn.Module):
    """Runs a function of the student inside a forward call, so that FSDP's root hooks gather
    the weights no layer owns (embeddings, final norm, LM head) around the whole loss: the
    chunked losses apply the head outside the model's own forward (`leafpipe.distill.kd_loss`)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        return fn(self.student, *args)


class ShardedStudent:
    """The student's weights, gradients and optimiser state sharded over the processes (FSDP2).

    Each decoder layer is its own FSDP unit (gathered while it runs); the embeddings, final
    norm and head form the root unit. The resumable state stays sharded (each process saves
    and loads its own shards: `leafpipe.distill.sharded_state`); only the weights are gathered
    whole, on process 0, for a save_pretrained folder. Collective: every process must call every
    method.

    On CUDA the units compute in bf16 (`mixed_precision`); the shards, the optimiser and the
    checkpoints stay fp32.
    """

    def __init__(self, student: nn.Module, device: torch.device) -> None:
        from torch.distributed.fsdp import fully_shard

        decoder = student.get_decoder() if hasattr(student, "get_decoder") else None
        layers = getattr(decoder, "layers", None)
        if layers is None:
            raise ValueError(
                f"distill.fsdp: cannot find the decoder layers of {type(student).__name__}"
            )
        for layer in layers:
            fully_shard(layer, mp_policy=mixed_precision(device, cast_inputs=True))
        self.student = student
        self.root = fully_shard(
            _Forward(student), mp_policy=mixed_precision(device, cast_inputs=False)
        )

    def __call__(self, fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        return self.root(fn, *args)

    def model_state(self) -> dict[str, torch.Tensor]:
        """The full state dict on CPU, on process 0 (empty elsewhere): for save_pretrained."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        return get_model_state_dict(
            self.student, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )

    def sharded_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """{"model": ..., "optimizer": ...}: this process's shards (DTensors, no copies), for
        `torch.distributed.checkpoint` to save, or to load into in place."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model, optim = get_state_dict(self.student, optimizer)
        return {"model": model, "optimizer": optim}

    def load_sharded_state(
        self, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]
    ) -> None:
        """Load a `sharded_state` into the student and `optimizer` (their shards on each
        process)."""
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(
            self.student,
            optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
        )


def launch(
    nproc: int,
    stage: str,
    config: Mapping[str, Any],
    arguments: Mapping[str, Any],
    threads: int | None = None,
) -> None:
    """Run `leafpipe STAGE` in `nproc` processes with torchrun, on this machine, and wait.

    The (validated) config travels as a YAML file; `arguments` become the stage's CLI options.
    The processes write to this process's stderr (a rule's log). CPU threads are shared out.
    """
    import yaml

    gpus = torch.cuda.device_count()
    if gpus and gpus < nproc:
        raise RuntimeError(
            f"distill.gpus is {nproc} but only {gpus} GPU(s) are visible to this job"
        )
    per_process = max(1, (threads or os.cpu_count() or 1) // nproc)
    with tempfile.TemporaryDirectory(prefix="leafpipe-launch-") as tmp:
        configfile = Path(tmp) / "config.yaml"
        configfile.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
        options = [
            x
            for name, value in arguments.items()
            if value is not None
            for x in (f"--{name.replace('_', '-')}", str(value))
        ]
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "leafpipe.cli",
            stage,
            "--configfile",
            str(configfile),
            "--threads",
            str(per_process),
            *options,
        ]
        log.info("launching %d processes: %s", nproc, " ".join(command))
        env = {**os.environ, "OMP_NUM_THREADS": str(per_process)}
        sys.stderr.flush()
        stream = sys.stderr if _has_fileno(sys.stderr) else None
        done = subprocess.run(
            command, env=env, stdout=stream, stderr=stream, check=False, preexec_fn=die_with_parent
        )
    if done.returncode:
        raise RuntimeError(
            f"{nproc}-process {stage} failed (exit code {done.returncode}); "
            "the processes' errors are in the log above"
        )


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True
