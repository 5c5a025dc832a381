"""The export and lm_eval stages, each given only the config its spec declares. lm-eval is not
installed here: a stand-in `lm_eval` command, written by the test, checks the arguments it gets
and writes a results file where the harness would (`<output_path>/<model>/results_<time>.json`)."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from leafpipe.config import for_seed, load_config
from leafpipe.evaluation.harness import HarnessError
from leafpipe.files.atomic import write_json, write_jsonl
from leafpipe.files.fingerprints import fingerprint
from leafpipe.files.provenance import recorded
from leafpipe.stages.exports import export_samples, lm_eval
from leafpipe.stages.specs import stage_config

MICRO = Path(__file__).resolve().parents[1] / "support" / "micro" / "config.yaml"
PROMPT = 'def add(a, b):\n    """Return a + b."""\n'


def _config(tmp_path: Path, stage: str, wildcards: dict, **evaluation) -> dict:
    raw = yaml.safe_load(MICRO.read_text())
    raw["evaluation"] |= evaluation
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return stage_config(stage, for_seed(load_config(path), 0), wildcards)


def _humaneval_files(tmp_path: Path, skipped: list) -> dict:
    row = {
        "id": "HumanEval/0",
        "task": "code",
        "instruction": "...",
        "answer": None,
        "code": {
            "kind": "humaneval",
            "prompt": PROMPT,
            "entry_point": "add",
            "test": "",
            "cases": [],
        },
    }
    write_jsonl([row], tmp_path / "rows.jsonl")
    write_json({"available": True, "reason": None, "skipped": skipped}, tmp_path / "info.json")
    gens = [tmp_path / "g-0.jsonl", tmp_path / "g-1.jsonl"]
    write_jsonl([{"id": "HumanEval/0", "sample": 0, "completion": "    return a + b\n"}], gens[0])
    write_jsonl([{"id": "HumanEval/0", "sample": 1, "completion": "    return a - b\n"}], gens[1])
    return {
        "generations": gens,
        "bench_path": tmp_path / "rows.jsonl",
        "info_path": tmp_path / "info.json",
    }


def test_export_writes_evalplus_samples_from_every_shard(tmp_path, caplog):
    config = _config(tmp_path, "export_samples", {"benchmark": "humaneval", "model": "kd"})
    out = tmp_path / "exports" / "kd" / "humaneval.evalplus.jsonl"
    with caplog.at_level("INFO", logger="leafpipe"):
        export_samples(config, "kd", "humaneval", out_path=out, **_humaneval_files(tmp_path, []))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["task_id"] for line in lines] == ["HumanEval/0", "HumanEval/0"]
    assert [line["solution"] for line in lines] == [
        PROMPT + "    return a + b\n",
        PROMPT + "    return a - b\n",
    ]
    assert f"evalplus.evaluate --dataset humaneval --samples {out}" in caplog.text
    assert "will not score" in caplog.text, "the micro config's humaneval has a limit"


def test_a_benchmark_without_data_exports_an_empty_file_and_says_why(tmp_path, caplog):
    config = _config(tmp_path, "export_samples", {"benchmark": "humaneval", "model": "kd"})
    write_jsonl([], tmp_path / "rows.jsonl")
    write_jsonl([], tmp_path / "g-0.jsonl")
    write_json({"available": False, "reason": "not installed", "skipped": []}, tmp_path / "i.json")
    out = tmp_path / "humaneval.evalplus.jsonl"
    files = {"bench_path": tmp_path / "rows.jsonl", "info_path": tmp_path / "i.json"}
    export_samples(config, "kd", "humaneval", [tmp_path / "g-0.jsonl"], out_path=out, **files)
    assert out.read_text() == ""
    assert "no data (not installed)" in caplog.text


def test_export_refuses_a_benchmark_whose_kind_has_no_scorer(tmp_path):
    config = _config(tmp_path, "export_samples", {"benchmark": "gsm8k", "model": "kd"})
    with pytest.raises(ValueError, match="'gsm8k' has no export format"):
        export_samples(
            config,
            "kd",
            "gsm8k",
            out_path=tmp_path / "x.evalplus.jsonl",
            **_humaneval_files(tmp_path, []),
        )


STAND_IN = """#!{python}
import json, os, sys
args = sys.argv[1:]
opts = dict(zip(args[::2], args[1::2]))
for flag in ("--model", "--model_args", "--tasks", "--output_path", "--seed"):
    if flag not in opts:
        sys.exit(f"stand-in lm_eval: {{flag}} missing")
if os.environ.get("STAND_IN_FAIL"):
    sys.exit("stand-in lm_eval: asked to fail")
with open(os.environ["STAND_IN_ARGS"], "w") as f:
    json.dump(args, f)
folder = os.path.join(opts["--output_path"], "local__model")
os.makedirs(folder)
tasks = opts["--tasks"].split(",")
results = {{t: {{"alias": t, "acc,none": 0.25, "acc_stderr,none": 0.1}} for t in tasks}}
with open(os.path.join(folder, "results_2026-12-05T08-00-00.json"), "w") as f:
    json.dump({{"results": results, "config": {{"model": "hf"}}}}, f)
"""


@pytest.fixture
def stand_in(tmp_path, monkeypatch) -> Path:
    """A `lm_eval` command first on PATH; it writes the arguments it got to the returned file."""
    folder = tmp_path / "bin"
    folder.mkdir()
    command = folder / "lm_eval"
    command.write_text(STAND_IN.format(python=sys.executable))
    command.chmod(command.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STAND_IN_ARGS", str(tmp_path / "args.json"))
    return tmp_path / "args.json"


def _lm_eval_config(tmp_path: Path) -> dict:
    settings = {"tasks": ["gsm8k", "arc_easy"], "limit": 5, "extra_args": ["--log_samples"]}
    return _config(tmp_path, "lm_eval", {"model": "leaf_instr"}, lm_eval=settings)


def test_lm_eval_runs_the_harness_on_the_model_folder_and_keeps_its_results(tmp_path, stand_in):
    out, model = tmp_path / "lm_eval" / "leaf_instr.json", tmp_path / "models" / "leaf_instr"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    lm_eval(_lm_eval_config(tmp_path), "leaf_instr", model, out)
    assert recorded(out)["inputs"] == {str(model): fingerprint(model)}
    args = json.loads(stand_in.read_text())
    opts = dict(zip(args[::2], args[1::2]))
    assert opts["--model"] == "hf"
    assert opts["--model_args"] == f"pretrained={tmp_path / 'models' / 'leaf_instr'}"
    assert opts["--tasks"] == "gsm8k,arc_easy"
    assert (opts["--batch_size"], opts["--device"], opts["--seed"]) == ("auto", "cuda", "0")
    assert opts["--limit"] == "5" and args[-1] == "--log_samples"
    assert "--num_fewshot" not in args and "--apply_chat_template" not in args
    assert json.loads(out.read_text())["results"]["arc_easy"]["acc,none"] == 0.25
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "leaf_instr.json",
        "leaf_instr.json.inputs.json",  # its record (leafpipe.files.fingerprints)
    ], "scratch removed"


def test_lm_eval_without_the_harness_installed_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HarnessError, match=r"pip install lm-eval"):
        lm_eval(_lm_eval_config(tmp_path), "leaf_instr", tmp_path, tmp_path / "out.json")


def test_a_failing_harness_is_an_error_with_its_message(tmp_path, stand_in, monkeypatch):
    monkeypatch.setenv("STAND_IN_FAIL", "1")
    out = tmp_path / "out" / "student.json"
    with pytest.raises(HarnessError, match="(?s)status 1.*asked to fail"):
        lm_eval(_lm_eval_config(tmp_path), "student", tmp_path, out)
    assert not out.exists()


def test_lm_eval_loads_a_hub_model_at_the_revision_its_role_pins(tmp_path, stand_in):
    raw = yaml.safe_load(MICRO.read_text())
    raw["models"]["teacher"] = {"path": "owner/teacher-model", "revision": "v1.2"}
    raw["evaluation"]["lm_eval"] = {"tasks": ["gsm8k"]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = stage_config("lm_eval", for_seed(load_config(path), 0), {"model": "teacher"})
    lm_eval(config, "teacher", "owner/teacher-model", tmp_path / "teacher.json")
    args = json.loads(stand_in.read_text())
    model_args = args[args.index("--model_args") + 1]
    assert model_args == "pretrained=owner/teacher-model,revision=v1.2"
