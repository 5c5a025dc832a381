"""Which GPUs a job may use: one placement policy for every stage a rule runs.

Snakemake's `gpu` resource is only a counter: it keeps snakemake from starting more GPU jobs
than the `--resources gpu=N` it was given, but never tells a job *which* devices are its own, so
every job would use device 0 of all it sees. `claim_gpus` therefore chooses the job's devices
and sets `CUDA_VISIBLE_DEVICES` to exactly them before anything initialises CUDA in the job's
process (CUDA reads the variable once, at initialisation); the stage then sees only its own
devices, numbered from 0, and so do the torchrun processes it starts (`data_parallel.launch`:
they inherit the variable, and LOCAL_RANK k uses the k-th claimed device).

- `gpu: 0`: every GPU is hidden, so a CPU job can never take memory on a device in use.
- On SLURM (`SLURM_JOB_ID` is set) `--gpus=N` makes SLURM set `CUDA_VISIBLE_DEVICES` to the
  job's own N devices; when it lists exactly as many as the job asks for, they are used as given.
- Elsewhere (a workstation, or several jobs inside one SLURM allocation) the job locks free
  devices in a pool of lock files, one per physical device, in a directory all of the user's
  jobs on the machine share (`lock_dir`: `$LEAFPIPE_GPU_LOCKS`, else under /tmp). The locks
  are `flock`s, held until the job ends and released by the kernel when its process dies,
  however it dies, so a lock is never left stale. When fewer
  devices are free than the job needs (two snakemakes on one machine, or a profile without a
  `gpu` limit), it waits, logging what it waits for, rather than share a device, and fails with
  an error after `$LEAFPIPE_GPU_WAIT_MIN` minutes (default `WAIT_MIN`).
- A job given GPUs on a machine where CUDA cannot be used fails at once, naming its rule and
  the two ways out, unless the config's `hardware.allow_cpu` is true: then it runs on the CPU.

This module imports torch only to check CUDA, after the claim: it is light enough for the
Snakefile or a profile to import.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import logging
import os
import re
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

VISIBLE = "CUDA_VISIBLE_DEVICES"
LOCKS_ENV = "LEAFPIPE_GPU_LOCKS"
WAIT_ENV = "LEAFPIPE_GPU_WAIT_MIN"
# Long enough for a GPU job of another run on the machine to finish; short enough that a run
# whose jobs can never all get devices says so within the hour.
WAIT_MIN = 60.0
POLL_S = 10.0  # between attempts to lock free devices
LOG_EVERY_S = 300.0  # how often a waiting job says that it still waits


class GpuError(RuntimeError):
    """A job cannot have the GPUs it was given (none usable, too few, or all busy too long)."""


@dataclass
class Claim:
    """The devices a job was given, as its `CUDA_VISIBLE_DEVICES` names them (none: the CPU).

    Holds the locks of the devices claimed from the pool until `release` (or the process's end).
    """

    devices: tuple[str, ...]
    locks: list[IO[bytes]] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for lock in self.locks:
            lock.close()  # closing the only descriptor of the lock file releases its flock
        self.locks.clear()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def physical_devices(env: MutableMapping[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, found without initialising CUDA: the entries of the
    parent's `CUDA_VISIBLE_DEVICES` when it is set (an index, or a GPU-/MIG- UUID each), else
    the indices of the NVIDIA device files /dev/nvidia0, /dev/nvidia1, ... (as profiles/local-gpu
    counts them); none on a machine without either."""
    env = os.environ if env is None else env
    listed = env.get(VISIBLE)
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    numbers = (f.removeprefix("/dev/nvidia") for f in glob.glob("/dev/nvidia[0-9]*"))
    return sorted((k for k in numbers if k.isdigit()), key=int)


def slurm_given(env: MutableMapping[str, str], n: int) -> bool:
    """Whether SLURM chose this job's `n` GPUs: a SLURM job (`--gpus=N`) whose
    `CUDA_VISIBLE_DEVICES` lists exactly `n` devices. Jobs sharing one allocation (snakemake
    run inside `salloc`) see all of its GPUs instead, and claim theirs from the pool."""
    return (
        bool(env.get("SLURM_JOB_ID"))
        and env.get(VISIBLE) is not None
        and len(physical_devices(env)) == n
    )


def lock_dir(env: MutableMapping[str, str] | None = None) -> Path:
    """The lock-file pool's directory: `$LEAFPIPE_GPU_LOCKS`, else one per user (and per SLURM
    allocation, whose device numbers may be its own) in /tmp; not in $TMPDIR, which Snakemake
    (the `tmpdir` resource) and SLURM may set apart for each job."""
    env = os.environ if env is None else env
    if env.get(LOCKS_ENV):
        return Path(env[LOCKS_ENV])
    allocation = f"-slurm{env['SLURM_JOB_ID']}" if env.get("SLURM_JOB_ID") else ""
    return Path("/tmp") / f"leafpipe-gpu-locks-{os.getuid()}{allocation}"


def claim_gpus(
    n: int,
    *,
    rule: str,
    allow_cpu: bool = False,
    env: MutableMapping[str, str] | None = None,
    locks: Path | None = None,
    wait_s: float | None = None,
    poll_s: float = POLL_S,
) -> Claim:
    """Choose the `n` GPUs of job `rule` and set `env[CUDA_VISIBLE_DEVICES]` to them (module
    docstring); call before anything initialises CUDA in this process.

    Args:
        n: the job's `gpu` resource; 0 hides every GPU.
        rule: the job's rule, named in errors.
        allow_cpu: the config's `hardware.allow_cpu`: without usable CUDA, run on the CPU
            (the stages then use float32) instead of failing.
        env: the environment to read and set (default: this process's).
        locks: the lock-file pool's directory (default: `lock_dir(env)`).
        wait_s: how long to wait for busy devices (default: `$LEAFPIPE_GPU_WAIT_MIN` or `WAIT_MIN`).
        poll_s: seconds between attempts while waiting.

    Returns:
        The claim; its locks are held until `Claim.release` or the process's end.

    Raises:
        GpuError: no usable CUDA (and not `allow_cpu`), fewer devices than `n` on the machine,
            or not enough of them free within `wait_s`.
    """
    env = os.environ if env is None else env
    devices = physical_devices(env)
    if n == 0:
        env[VISIBLE] = ""
        return Claim(())
    if not devices:
        return _on_cpu(n, rule, allow_cpu, env, "no NVIDIA device is visible to this job")
    claim = _claim_devices(devices, n, rule, env, locks, wait_s, poll_s)
    env[VISIBLE] = ",".join(claim.devices)
    if not _cuda_usable():
        claim.release()
        return _on_cpu(
            n,
            rule,
            allow_cpu,
            env,
            f"CUDA cannot use device(s) {env[VISIBLE]} "
            "(is this torch built with CUDA, and is the driver loaded?)",
        )
    log.info(
        "rule %s runs on GPU(s) %s (%s=%s)", rule, ", ".join(claim.devices), VISIBLE, env[VISIBLE]
    )
    return claim


def _claim_devices(
    devices: Sequence[str],
    n: int,
    rule: str,
    env: MutableMapping[str, str],
    locks: Path | None,
    wait_s: float | None,
    poll_s: float,
) -> Claim:
    """`n` of the machine's `devices` for the job: all that SLURM gave it, else the first `n`
    free ones of the lock-file pool (waiting for busy ones up to `wait_s`)."""
    if len(devices) < n:
        raise GpuError(
            f"rule {rule!r} asks for {n} GPUs but this machine has {len(devices)} "
            f"({VISIBLE} or /dev/nvidia*): lower resources: {{{rule}: {{gpu: ...}}}}"
        )
    if slurm_given(env, n):
        return Claim(tuple(devices))
    if env.get(VISIBLE) is None:  # device k is then /dev/nvidiak, as nvidia-smi numbers them
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    wait = float(env.get(WAIT_ENV, WAIT_MIN)) * 60 if wait_s is None else wait_s
    return _lock_free(devices, n, rule, locks or lock_dir(env), wait, poll_s)


def _cuda_usable() -> bool:
    import torch

    return torch.cuda.is_available()


def _on_cpu(n: int, rule: str, allow_cpu: bool, env: MutableMapping[str, str], why: str) -> Claim:
    """A GPU job without usable CUDA: refused, unless the config allows the CPU."""
    if not allow_cpu:
        raise GpuError(
            f"rule {rule!r} is given {n} GPU(s), but {why}. Run it where CUDA works, or let it run "
            f"on the CPU in float32 (slow for real models) with `hardware: {{allow_cpu: true}}`, "
            f"or give it no GPU with `resources: {{{rule}: {{gpu: 0}}}}` in the config"
        )
    env[VISIBLE] = ""
    log.warning(
        "rule %s is given %d GPU(s), but %s: it runs on the CPU in float32 (hardware.allow_cpu)",
        rule,
        n,
        why,
    )
    return Claim(())


def _lock_free(
    devices: Sequence[str], n: int, rule: str, locks: Path, wait_s: float, poll_s: float
) -> Claim:
    """Lock `n` free devices of `devices`, polling until `wait_s` has passed.

    An attempt that finds fewer than `n` free releases what it took before waiting, so two jobs
    that each hold part of what they need can never wait for each other for ever.
    """
    locks.mkdir(parents=True, exist_ok=True)
    start = next_log = time.monotonic()
    while True:
        claim = _try_lock(devices, n, locks)
        if claim is not None:
            return claim
        waited = time.monotonic() - start
        if waited >= wait_s:
            raise GpuError(
                f"rule {rule!r} needs {n} free GPU(s) of {', '.join(devices)}, "
                f"but other jobs held them for {waited / 60:.1f} min (locks in {locks}). "
                "Give snakemake no more GPUs than the "
                f"machine has (profiles/local-gpu, or --resources gpu=N), or wait longer with "
                f"${WAIT_ENV}"
            )
        if time.monotonic() >= next_log:
            log.info(
                "rule %s waits for %d free GPU(s) of %s (locks in %s; waited %.0f s of %.0f)",
                rule,
                n,
                ", ".join(devices),
                locks,
                waited,
                wait_s,
            )
            next_log = time.monotonic() + LOG_EVERY_S
        time.sleep(min(poll_s, max(0.0, wait_s - waited)))


def _try_lock(devices: Sequence[str], n: int, locks: Path) -> Claim | None:
    held: list[tuple[str, IO[bytes]]] = []
    for device in devices:
        lock = _lock(locks / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock")
        if lock is not None:
            held.append((device, lock))
        if len(held) == n:
            return Claim(tuple(d for d, _ in held), [f for _, f in held])
    Claim((), [f for _, f in held]).release()
    return None


def _lock(path: Path) -> IO[bytes] | None:
    """The open, exclusively flock-ed lock file; None when another process holds it.

    Opened read-only, so a pool shared by several users works with files another user created.
    """
    f = os.fdopen(os.open(path, os.O_RDONLY | os.O_CREAT, 0o666), "rb")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        f.close()
        if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return None
        raise
    return f
