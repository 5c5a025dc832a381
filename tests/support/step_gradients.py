"""The student's gradient in a distillation run's one optimiser step, as the trainer hands it to
clipping: after every pass's weighted backward and the sum over the processes, before the update.
In this process, or in each of two data-parallel processes (gloo on the CPU)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from leafpipe.distill import parallel
from leafpipe.distill.trainer import distill


@contextlib.contextmanager
def _captured_gradients() -> Iterator[list[list[torch.Tensor]]]:
    """Each step's gradients, copied where the trainer measures their norm (`clip_grad_norm_`)."""
    steps: list[list[torch.Tensor]] = []
    clip = torch.nn.utils.clip_grad_norm_

    def capture(params, limit):
        params = list(params)
        steps.append([p.grad.detach().clone() for p in params])
        return clip(params, limit)

    torch.nn.utils.clip_grad_norm_ = capture
    try:
        yield steps
    finally:
        torch.nn.utils.clip_grad_norm_ = clip


def first_step_gradients(teacher, student, tokenizer, groups, spec) -> list[torch.Tensor]:
    """The gradient of each trainable parameter of `student` in a run of `spec`, which must make
    exactly one optimiser step (one epoch, a global batch holding every item)."""
    with _captured_gradients() as steps:
        distill(teacher, student, tokenizer, groups, spec, 1)
    assert len(steps) == 1, f"the run made {len(steps)} optimiser steps, not one"
    return steps[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, folder: Path, run: tuple) -> None:
    """One of two processes, as torchrun would start it: its gradient saved in `folder`."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )
    gradients = first_step_gradients(*run)
    torch.save((dist.get_world_size(), gradients), folder / f"rank{rank}.pt")
    parallel.teardown()


def two_process_gradients(
    teacher, student, tokenizer, groups, spec, folder: Path, timeout_s: float = 120
) -> list[list[torch.Tensor]]:
    """`first_step_gradients` of each of two data-parallel processes, forked from this one (the
    models as they are here, no imports or loading to repeat); they exchange gradients over gloo."""
    port, fork = _free_port(), multiprocessing.get_context("fork")
    run = (teacher, student, tokenizer, groups, spec)
    procs = [fork.Process(target=_rank_main, args=(r, port, folder, run)) for r in range(2)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():  # hung in a collective: its peer failed
            proc.kill()
            proc.join()
    assert [proc.exitcode for proc in procs] == [0, 0], "a process failed; its error is above"
    saved = [torch.load(folder / f"rank{r}.pt") for r in range(2)]
    assert [processes for processes, _ in saved] == [2, 2], "the run was not data-parallel"
    return [gradients for _, gradients in saved]
