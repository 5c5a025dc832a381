"""Paths made of shell syntax reach no shell: a model folder and a results folder named so that
pasting them unquoted into a command line would run `touch PWNED...`.

Where a config value could meet a shell: no rule has `shell:` or `run:`; every rule is
`script:` through workflow/scripts/run_stage.py, which Snakemake runs as
`<python> .snakemake/scripts/tmpXXXX.run_stage.py` (a relative path, quoted) with the rule's
inputs, outputs and config pickled into that file, never on a command line. leafpipe's own
subprocesses (data_parallel.launch's torchrun, run_record's git, bench/*) take argument lists,
never `shell=True`. The remaining shell is the SLURM executor's sbatch call: see
`test_slurm_submission_runs_nothing_from_a_path`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import faults
import pytest
import torch
import yaml
from snakemake_runs import BIN, MICRO, REPO
from tiny_models import tiny_model
from transformers import LlamaConfig, LlamaForCausalLM

from leafpipe.models.pretrain import save_model
from leafpipe.stages import load_model

# Spaces, a command separator, both substitutions and both quotes (unbalanced).
HOSTILE = "dir with space; touch PWNED $(touch PWNED2) `touch PWNED3` 'q\""


def _pwned(*roots: Path) -> list[Path]:
    """Files a `touch PWNED...` would have made, anywhere under `roots` (and in the repository)."""
    found = [p for root in roots for p in root.rglob("PWNED*")]
    return found + list(REPO.glob("PWNED*")) + list(Path.cwd().glob("PWNED*"))


def _run(cmd: list[str], cwd: Path, **kwargs: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **kwargs}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> dict[str, Path]:
    """A teacher folder, a results folder, a Snakemake working directory and a config file, all
    under a folder named HOSTILE; the config is the micro one with a local teacher and a student
    derived from it (rule derive_model)."""
    base = tmp_path_factory.mktemp("quoting") / HOSTILE
    model = tiny_model(LlamaConfig, LlamaForCausalLM, tokenizer, seed=0)
    save_model(model, tokenizer, base / f"teacher {HOSTILE}")
    config = yaml.safe_load(MICRO.read_text()) | {
        "results": str(base / f"results {HOSTILE}"),
        "models": {
            "teacher": {"path": str(base / f"teacher {HOSTILE}")},
            "student": {"derive": {"from": "teacher", "layers": 1}},
        },
    }
    configfile = base / f"config {HOSTILE}.yaml"
    configfile.write_text(yaml.safe_dump(config))
    (base / "work").mkdir()
    return {
        "base": base,
        "teacher": base / f"teacher {HOSTILE}",
        "results": Path(config["results"]),
        "configfile": configfile,
        "work": base / "work",
    }


def _snakemake(hostile: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    """Snakemake on the repository's Snakefile, working in the hostile folder."""
    return _run(
        [
            str(BIN / "snakemake"),
            *args,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(hostile["work"]),
            "--cores",
            "1",
            "--configfile",
            str(hostile["configfile"]),
        ],
        cwd=hostile["work"],
    )


def test_load_model_reads_a_folder_named_like_a_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_llama, tokenizer
) -> None:
    monkeypatch.chdir(tmp_path)  # where an unquoted `touch PWNED` would write
    folder = tmp_path / HOSTILE / HOSTILE
    model = tiny_llama(seed=1)
    save_model(model, tokenizer, folder)
    loaded, loaded_tokenizer = load_model(folder)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert _pwned(tmp_path) == []


def test_workflow_plans_and_runs_with_hostile_paths(hostile: dict[str, Path]) -> None:
    """A dry run of the whole DAG, then a real derive_model job reading the teacher's folder and
    writing into the results folder; nothing but the job runs."""
    dry = _snakemake(hostile, "-n", "--quiet", "rules")
    assert dry.returncode == 0, dry.stderr[-3000:]
    planned = dry.stdout + dry.stderr
    assert "\nderive_model " in planned and "\nworld " in planned and "\npretrain " not in planned
    student = hostile["results"] / "seed-0" / "models" / "student"
    done = _snakemake(hostile, str(student))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((student / "config.json").read_text())["num_hidden_layers"] == 1
    assert (hostile["results"] / "seed-0" / "logs" / "derive_model" / "student.log").is_file()
    assert _pwned(hostile["base"]) == []


def test_cli_runs_a_stage_with_hostile_paths(hostile: dict[str, Path]) -> None:
    out = hostile["base"] / f"cli student {HOSTILE}"
    stage = dict(role="student", parent_dir=hostile["teacher"], out_dir=out)
    argv = faults.leafpipe_argv("derive_model", stage, hostile["configfile"])
    proc = _run([str(BIN / "leafpipe"), *argv], cwd=hostile["work"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert _pwned(hostile["base"]) == []


def test_slurm_submission_runs_nothing_from_a_path(
    hostile: dict[str, Path], tmp_path: Path
) -> None:
    """profiles/slurm up to the sbatch call, with a fake sbatch (records nothing, submits nothing)
    and a benign working directory and config path: only the config's values are hostile."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\necho 'fake sbatch: refusing' >&2\nexit 1\n")
    for tool in ("sinfo", "squeue", "sacct", "scontrol", "sshare", "sacctmgr"):
        (fake / tool).write_text("#!/bin/sh\nexit 0\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    work, configfile = tmp_path / "work", tmp_path / "config.yaml"
    work.mkdir()
    configfile.write_text(hostile["configfile"].read_text())
    proc = _run(
        [
            str(BIN / "snakemake"),
            str(hostile["results"] / "seed-0" / "models" / "student"),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(work),
            "--workflow-profile",
            str(REPO / "profiles" / "slurm"),
            "--retries",
            "0",
            "--forcerun",
            "derive_model",
            "--slurm-init-seconds-before-status-checks",
            "1",
            "--configfile",
            str(configfile),
        ],
        cwd=work,
        PATH=f"{fake}:{os.environ['PATH']}",
        LEAFPIPE_SLURM_ACCOUNT="acct",
        LEAFPIPE_SLURM_PARTITION="part",
    )
    assert proc.returncode != 0
    # refused before any submission: the executor would paste the paths into `sbatch --wrap`
    assert "SLURM jobs cannot use paths with" in proc.stdout + proc.stderr
    assert "fake sbatch" not in proc.stdout + proc.stderr
    assert _pwned(tmp_path, hostile["base"]) == []
