"""The resumable state of a sharded (FSDP) run: every process saves and loads its own shards of
the student's weights and AdamW's moments with `torch.distributed.checkpoint` (DCP).

A full state gathered on process 0, as state.pt holds it, would pass 12 bytes a parameter (fp32
weights and two moments) through that process's host memory at every checkpoint, ~36 GiB for a
3B student. Here no process holds more than host copies of its own shards (DCP's file writer
keeps a file's tensors until the file is written). The folder (docs/data-schemas.md,
"Distillation checkpoints"):

    state-shards/
        __<rank>_0.distcp   each process's shards (DCP's file names)
        .metadata           DCP's index of the shards, written by process 0 after all of them
        progress.pt         `checkpoints.progress_record`: the position, the metrics so far,
                            every process's RNG states, the state format and the fingerprint

It is written as a temporary folder that process 0 renames into place once every process has
written its shards (`atomic_path`), so a save killed midway leaves the previous state as it
was. It is resumed as state.pt is (`checkpoints.read_progress`): only by a run with the same
fingerprint, and then bit for bit, RNG states included.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from leafpipe.distill import parallel
from leafpipe.distill.checkpoints import (
    STATE_SHARDS,
    TrainingState,
    progress_record,
    read_progress,
    training_state,
)
from leafpipe.files.atomic import atomic_path

PROGRESS = "progress.pt"


def save_sharded_state(
    work: Path,
    state: TrainingState,
    *,
    fingerprint: str,
    student: parallel.ShardedStudent,
    optimizer: torch.optim.Optimizer,
    elapsed: float,
    rng: Sequence[dict[str, Any]],
) -> None:
    """Write `work`/state-shards/ (collective: every process calls it).

    `rng`: every process's `rng_state()` in rank order, as process 0 writes them.
    """
    main = parallel.is_main()
    with (
        atomic_path(work / STATE_SHARDS, directory=True)
        if main
        else contextlib.nullcontext() as mine
    ):
        folder = parallel.from_main(mine)  # every process writes into process 0's temporary
        # Returns on every process once all have written their shards and process 0 the index:
        # the barrier before process 0 renames the folder into place.
        dcp.save(student.sharded_state(optimizer), checkpoint_id=folder)
        if main:
            record = progress_record(state, fingerprint=fingerprint, elapsed=elapsed, rng=rng)
            torch.save(record, folder / PROGRESS)


def load_sharded_state(
    work: Path,
    *,
    fingerprint: str,
    rank: int,
    student: parallel.ShardedStudent,
    optimizer: torch.optim.Optimizer,
) -> TrainingState | None:
    """Load `work`/state-shards/ into the student and `optimizer` and restore process `rank`'s
    RNG states; None, loading nothing, when there is none or `read_progress` rejects it.
    Collective: every process calls it, and each reads only its own shards."""
    folder = work / STATE_SHARDS
    saved = read_progress(folder / PROGRESS, fingerprint=fingerprint, rank=rank)
    if saved is None:
        return None
    shards = student.sharded_state(optimizer)
    dcp.load(shards, checkpoint_id=folder)  # in place, into this process's shards
    student.load_sharded_state(optimizer, shards)
    return training_state(saved)
