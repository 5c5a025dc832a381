"""The `script:` of the GPU-claim workflow tests (tests/execution/test_gpu_jobs_side_by_side.py):
a job that claims its GPUs through the pipeline's own entry point, `adapter.run`, as every rule
of workflow/ does, then runs a stand-in stage `probe` that records what it was given and when.

Three things differ from a real job, each so that the test runs on a CPU in seconds: torch is
told CUDA works on whatever devices the claim leaves visible (the machine's GPUs are a fake
`CUDA_VISIBLE_DEVICES` list), a waiting job polls every 0.1 s instead of every `POLL_S`, and
the stage is `probe`, registered here with a spec that reads nothing.
"""

import functools
import json
import os
import signal
import time
from pathlib import Path

from leafpipe import stages
from leafpipe.execution import adapter, devices
from leafpipe.stages import specs

POLL_S = 0.1


def probe(job: str, done: str, records: str, hold_s: float, die_first: bool, config) -> None:
    """Record `{devices, start}` in `records/<job>.json`, hold the devices `hold_s` seconds, then
    add `end` and write `done`. With `die_first`, the first job to get here (the first to claim,
    as only one device is shared) records itself as `records/victim`'s job and dies of SIGKILL
    mid-job instead, as a job killed by the kernel's OOM killer or `kill -9` does."""
    record = {"devices": os.environ[devices.VISIBLE], "start": time.time()}
    path = Path(records) / f"{job}.json"
    path.write_text(json.dumps(record))
    if die_first and _first(Path(records) / "victim", job):
        time.sleep(hold_s)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(hold_s)
    path.write_text(json.dumps({**record, "end": time.time()}))
    Path(done).write_text(job)


def _first(marker: Path, job: str) -> bool:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, job.encode())
    os.close(fd)
    return True


devices._cuda_usable = lambda: True
adapter.claim_gpus = functools.partial(devices.claim_gpus, poll_s=POLL_S)
stages.probe = probe
specs.SPECS["probe"] = specs.StageSpec(())
adapter.run(snakemake)  # noqa: F821 (injected by Snakemake)
