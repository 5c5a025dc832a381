"""Running the distill stage, killed and resumed or uninterrupted, and comparing its outputs bit
for bit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from distill_groups import counterfactual_row, many_groups, original_row
from faults import leafpipe_argv

from leafpipe import stages
from leafpipe.config import validate_config
from leafpipe.distill.checkpoints import STATE, STATE_SHARDS
from leafpipe.files.atomic import write_jsonl

REPO = Path(__file__).resolve().parents[2]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [n for n in a if not torch.equal(a[n], b[n])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def stage_inputs(
    tiny_llama, tokenizer, samples, folder: Path, groups: int, distill: dict, dropout: float = 0.2
) -> tuple[dict, dict]:
    """Teacher and student folders (attention dropout `dropout`), a counterfactual JSONL of
    `groups` groups and config.yaml in `folder`: the raw config and the distill stage's
    arguments (variant leaf_instr)."""
    for name, seed in (("teacher", 0), ("student", 1)):
        model = tiny_llama(seed, attention_dropout=dropout)
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
    rows = []
    for k, group in enumerate(many_groups(samples, groups)):
        rows.append(original_row(f"g{k}", *group.original))
        rows += [
            counterfactual_row(f"g{k}", j, instruction, response, [])
            for j, (instruction, response) in enumerate(group.counterfactuals)
        ]
    write_jsonl(rows, folder / "data.jsonl")
    raw = {"models": {"teacher": {}, "student": {}}, "distill": distill}
    (folder / "config.yaml").write_text(yaml.safe_dump(raw))
    args = dict(
        variant="leaf_instr",
        teacher_dir=folder / "teacher",
        student_dir=folder / "student",
        data_path=folder / "data.jsonl",
    )
    return raw, args


def distill_command(folder: Path, args: dict, out: Path, work: Path, threads: int) -> list[str]:
    """`leafpipe distill` as the workflow runs it, on `stage_inputs`' config.yaml in `folder` and
    its stage arguments `args`: a command line for a process the tests can kill."""
    options = {"out_dir": out, "checkpoint_dir": work, "threads": threads, **args}
    argv = leafpipe_argv("distill", options, folder / "config.yaml")
    return [sys.executable, "-m", "leafpipe.cli", *argv]


def kill_at_first_checkpoint(cli: list[str], out: Path, work: Path, patience_s: float) -> None:
    """Run `cli` (a `distill_command`) and SIGKILL its whole process group as soon as `work`
    holds a checkpoint (or after `patience_s`), as a preempted job dies; asserts that the signal
    ended it mid-run: a checkpoint in `work`, no output in `out`."""
    proc = subprocess.Popen(
        cli,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=True,  # a process group of its own: torchrun's workers die with it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + patience_s
    while not _has_state(work) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    with contextlib.suppress(ProcessLookupError):  # ended by itself: the asserts say how
        os.killpg(proc.pid, signal.SIGKILL)
    stderr = proc.communicate()[1].decode()
    assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
    assert _has_state(work) and not out.exists(), stderr[-3000:]


def _has_state(work: Path) -> bool:
    """A resumable state, state.pt or (a sharded run's) state-shards/, is in `work`."""
    return (work / STATE).exists() or (work / STATE_SHARDS).exists()


def resume_and_reference(
    raw: dict, args: dict, folder: Path, out: Path, work: Path, threads: int
) -> Path:
    """The stage rerun into `out`, resuming from what a killed run left in `work`, and run
    uninterrupted beside it in `folder` for comparison: the reference's output folder."""
    config = validate_config(raw)
    stages.distill(config, **args, out_dir=out, checkpoint_dir=work, threads=threads)
    reference = folder / "reference"
    stages.distill(
        config, **args, out_dir=reference, checkpoint_dir=folder / "ref-work", threads=threads
    )
    return reference
