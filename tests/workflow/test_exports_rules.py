"""Rules export_samples and lm_eval in the DAG: exports for the kinds with an official scorer
(on by default), lm_eval only when evaluation.lm_eval is set; and one real lm_eval job, run by
Snakemake with a stand-in `lm_eval` command (the harness is not installed here)."""

import json
import os
import stat
import sys
from collections import Counter
from pathlib import Path

import yaml
from snakemake_runs import MICRO, snakemake

STAND_IN = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
opts = dict(zip(args[::2], args[1::2]))
folder = os.path.join(opts["--output_path"], "local__model")
os.makedirs(folder)
with open(os.path.join(folder, "results_2026-12-05T08-00-00.json"), "w") as f:
    json.dump({{"results": {{"t": {{"acc,none": 0.5}}}}, "argv": args}}, f)
"""
# A model folder the planner can size (config.json is all it reads); the stand-in loads nothing.
TEACHER_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 300,
    "max_position_embeddings": 256,
}


def _configfile(tmp_path: Path, models: dict | None = None, **evaluation) -> Path:
    config = yaml.safe_load(MICRO.read_text())
    config["evaluation"] |= evaluation
    config["models"] |= models or {}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _jobs(tmp_path: Path, configfile: Path) -> Counter:
    """Jobs per rule of a dry run (`--quiet rules` prints each rule with its count)."""
    proc = snakemake(tmp_path / "results", "-n", "--quiet", "rules", configfile=configfile)
    assert proc.returncode == 0, proc.stderr
    words = [line.split() for line in (proc.stdout + proc.stderr).splitlines()]
    return Counter({w[0]: int(w[1]) for w in words if len(w) == 2 and w[1].isdigit()})


def test_exports_are_planned_per_model_for_humaneval_only_and_lm_eval_not_by_default(tmp_path):
    jobs = _jobs(tmp_path, MICRO)
    assert jobs["export_samples"] == 6, "6 models; humaneval is the micro config's one kind"
    assert "lm_eval" not in jobs


def test_lm_eval_is_planned_per_model_when_configured_and_exports_can_be_off(tmp_path):
    configfile = _configfile(tmp_path, exports=False, lm_eval={"tasks": ["hellaswag"]})
    jobs = _jobs(tmp_path, configfile)
    assert jobs["lm_eval"] == 6 and "export_samples" not in jobs


def test_an_lm_eval_job_runs_the_harness_command_on_the_model_folder(tmp_path, monkeypatch):
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TEACHER_CONFIG))
    command = tmp_path / "bin" / "lm_eval"
    command.parent.mkdir()
    command.write_text(STAND_IN)
    command.chmod(command.stat().st_mode | stat.S_IXUSR)
    configfile = _configfile(
        tmp_path, {"teacher": {"path": str(folder)}}, lm_eval={"tasks": ["t"], "device": "cpu"}
    )
    target = tmp_path / "results" / "seed-0" / "lm_eval" / "teacher.json"
    monkeypatch.setenv("PATH", f"{command.parent}{os.pathsep}{os.environ['PATH']}")
    proc = snakemake(tmp_path / "results", str(target), configfile=configfile)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads(target.read_text())
    assert written["results"] == {"t": {"acc,none": 0.5}}
    assert f"pretrained={folder}" in written["argv"] and "cpu" in written["argv"]
