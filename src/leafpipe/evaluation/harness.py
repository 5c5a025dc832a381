"""lm-evaluation-harness on a model folder: the optional `lm_eval` rule (`evaluation.lm_eval`).

The harness is not a dependency of leafpipe: the rule calls its `lm_eval` command (HF backend,
the folder as `pretrained=`), so whichever version a user installs runs with its own tasks and
prompts, and its results file is kept as the harness wrote it. The command's flags are the
harness's long-standing ones (`--model`, `--model_args`, `--tasks`, `--batch_size`, `--device`,
`--output_path`, `--seed`, `--num_fewshot`, `--limit`, `--apply_chat_template`; docs/interface.md
of EleutherAI/lm-evaluation-harness, commit 4e7e0d4), which versions with subcommands still take
(they insert `run`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from leafpipe.files.atomic import write_json

EXECUTABLES = ("lm_eval", "lm-eval")  # the two names the harness installs
_TAIL_LINES = 20


class HarnessError(RuntimeError):
    """lm-eval is missing, failed, or left no single results file."""


def harness_executable() -> str:
    """The installed `lm_eval` command, or an error that says how to get it."""
    for name in EXECUTABLES:
        found = shutil.which(name)
        if found:
            return found
    raise HarnessError(
        "evaluation.lm_eval is set, but lm-evaluation-harness is not installed: no `lm_eval` "
        "command on PATH. Install it in the run's environment (pip install lm-eval) or remove "
        "evaluation.lm_eval from the config"
    )


def harness_command(
    executable: str,
    model_dir: str | Path,
    settings: Mapping[str, Any],
    trust_remote_code: bool,
    seed: int,
    output_dir: str | Path,
    revision: str | None = None,
) -> list[str]:
    """The `lm_eval` command line for one model folder (or hub id, loaded at `revision`, the
    config's pin: the HF backend's `revision=` model argument) and the `evaluation.lm_eval`
    settings."""
    for what, value in (("model folder", model_dir), ("revision", revision)):
        if "," in str(value or ""):
            raise HarnessError(f"{what} {value}: lm-eval's --model_args cannot hold a comma")
    model_args = [f"pretrained={model_dir}"]
    model_args += ["trust_remote_code=True"] if trust_remote_code else []
    model_args += [f"revision={revision}"] if revision else []
    model_args += [settings["model_args"]] if settings["model_args"] else []
    command = [executable, "--model", "hf", "--model_args", ",".join(model_args)]
    command += ["--tasks", ",".join(settings["tasks"])]
    command += ["--batch_size", str(settings["batch_size"]), "--device", settings["device"]]
    command += ["--output_path", str(output_dir), "--seed", str(seed)]
    if settings["num_fewshot"] is not None:
        command += ["--num_fewshot", str(settings["num_fewshot"])]
    if settings["limit"] is not None:
        command += ["--limit", str(settings["limit"])]
    command += ["--apply_chat_template"] if settings["apply_chat_template"] else []
    return command + list(settings["extra_args"])


def results_file(output_dir: Path) -> Path:
    """The one results file lm-eval wrote under `output_dir`. It names the file itself
    (`<model>/results_<time>.json`), so the rule's fixed output is copied from it."""
    found = sorted(output_dir.rglob("results*.json"))
    if len(found) != 1:
        raise HarnessError(
            f"lm-eval left {len(found)} results files under {output_dir} (expected one): "
            f"{[str(p) for p in found]}"
        )
    return found[0]


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_TAIL_LINES:])


def run_harness(
    command: list[str], output_dir: Path, out_path: str | Path, inputs: Sequence[str | Path] = ()
) -> dict[str, Any]:
    """Run `command` (which writes under `output_dir`) and copy its results to `out_path`, which
    records `inputs` (leafpipe.files.fingerprints)."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise HarnessError(
            f"lm-eval exited with status {done.returncode}: {' '.join(command)}\n"
            f"{_tail(done.stderr) or _tail(done.stdout)}"
        )
    path = results_file(output_dir)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise HarnessError(f"{path}: not JSON ({err.msg}, line {err.lineno})") from err
    if not isinstance(results, dict) or not isinstance(results.get("results"), dict):
        raise HarnessError(f'{path}: field "results" is missing or not an object')
    write_json(results, out_path, inputs=inputs)
    return results


def evaluate_folder(
    model_dir: str | Path,
    settings: Mapping[str, Any],
    trust_remote_code: bool,
    seed: int,
    out_path: str | Path,
    revision: str | None = None,
) -> dict[str, Any]:
    """lm-eval on `model_dir` (at `revision`, for a hub id) with `settings`; its results file is
    written to `out_path`, which records the model folder (not a hub id). Its own output goes to
    a scratch folder beside `out_path`, removed afterwards."""
    executable = harness_executable()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent, prefix=".lm_eval-") as scratch:
        command = harness_command(
            executable, model_dir, settings, trust_remote_code, seed, scratch, revision
        )
        return run_harness(command, Path(scratch), out_path, inputs=[model_dir])
