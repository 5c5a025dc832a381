"""Nothing lost, nothing wrong: every long stage, SIGKILLed at a random point and rerun with the
same command, ends with exactly the output of an uninterrupted run (on a CPU, bit for bit), and a
killed run never leaves its output in place. A stage that runs over the file-size limit fails
with a clear message and leaves nothing that looks complete.

Each stage runs as the pipeline runs it, through the `leafpipe` command line in a child process
(forked from a server that has done the imports, tests/support/faults.py; the file-size test
starts a fresh interpreter). A kill point is drawn, with random.Random(f"{SEED}/{test id}"),
among two kinds: the k-th update of the stage's progress bar (mid-work; the test kills the
child), and just before or after the k-th publish of an atomic write (the child kills itself).
Set LEAFPIPE_FAULT_SEED to draw other points.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faults
import pandas as pd
import pytest
import torch
import yaml
from distill_runs import assert_bitwise_equal, stage_inputs
from safetensors.torch import load_file

from leafpipe import stages
from leafpipe.config import validate_config
from leafpipe.files.atomic import read_jsonl, write_jsonl

SEED = os.environ.get("LEAFPIPE_FAULT_SEED", "0")


@dataclass
class Case:
    """One stage with its inputs: how to run it, where its output goes, how to kill it."""

    stage: str
    configfile: Path
    args: Callable[[Path], dict[str, Any]]  # stage arguments writing under a folder
    output: str  # the argument naming the final output
    resumable: str  # the state a rerun resumes from: a file, relative to that folder
    resumed: str  # what the rerun logs when it resumes
    bar: str  # regex of the progress bar's description
    kill_points: Callable[[Path], range]  # progress counts with work left, from a finished output
    same: Callable[[Path, Path], None]  # asserts two outputs are the same

    def config(self) -> dict[str, Any]:
        return validate_config(yaml.safe_load(self.configfile.read_text()))


def _model(tiny_llama: Any, tokenizer: Any, folder: Path) -> Path:
    tiny_llama(1).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _student_shard(model: Path, out_name: str, **inputs: Any) -> Callable[[Path], dict[str, Any]]:
    """`Case.args` of a stage run by shards: shard 1, on the student in `model`, over `inputs`,
    writing `out_name` under the folder given."""
    return lambda out: dict(
        model="student", model_dir=model, **inputs, out_path=out / out_name, shard=1, threads=1
    )


def _config(folder: Path, raw: dict[str, Any]) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"models": {"teacher": {}, "student": {}}, **raw}))
    return path


def _same_frame(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)


def _same_bytes(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes()


def _metric_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in csv.DictReader(fh)]


def _tokenizer_settings(path: Path) -> dict[str, Any]:
    """tokenizer_config.json less `local_files_only`, which transformers copies from how the
    tokenizer was loaded: the CLI child runs offline, the in-process reference may not."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "local_files_only"}


def _same_model(a: Path, b: Path) -> None:
    """Same files, same tensors, same configs and tokenizer; the metrics equal but for timings
    (training.json and TensorBoard's events record times and resumes, so differ)."""

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    assert files(a) == files(b)
    for name in files(a):
        if name.endswith(".safetensors"):
            assert_bitwise_equal(load_file(a / name), load_file(b / name))
        elif name == "metrics.csv":
            assert _metric_rows(a / name) == _metric_rows(b / name)
        elif name == "tokenizer_config.json":
            assert _tokenizer_settings(a / name) == _tokenizer_settings(b / name)
        elif name != "training.json" and not name.startswith("tensorboard"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def score_case(tmp_path: Path, tiny_llama: Any, tokenizer: Any, samples: Any) -> Case:
    """Shard 1 of 2 of a 16-row corpus, one sample per batch: 8 progress updates."""
    rows = [
        {"id": f"r{i}", "instruction": f"{a} ({i})", "response": b}
        for i in range(16)
        for a, b in [samples[i % 2]]
    ]
    write_jsonl(rows, tmp_path / "corpus.jsonl")
    model = _model(tiny_llama, tokenizer, tmp_path / "student")
    configfile = _config(
        tmp_path, {"scoring": {"max_batch": 1, "shards": 2}, "detection": {"response_level": True}}
    )
    return Case(
        "score",
        configfile,
        _student_shard(model, "shard-1.parquet", corpus_path=tmp_path / "corpus.jsonl"),
        "out_path",
        "",
        "",
        "score",
        lambda out: range(1, pd.read_parquet(out)["sample_id"].nunique()),
        _same_frame,
    )


def generate_case(tmp_path: Path, tiny_llama: Any, tokenizer: Any, samples: Any) -> Case:
    """Shard 1 of 2 of 16 prompts, sampled twice each, in 4 batches of 2: a resumed run must
    draw the same samples as an uninterrupted one."""
    rows = [
        {"id": f"p{i}", "instruction": f"{samples[i % 2][0]} ({i})", "answer": "7"}
        for i in range(16)
    ]
    write_jsonl(rows, tmp_path / "bench.jsonl")
    model = _model(tiny_llama, tokenizer, tmp_path / "student")
    bench = {"split": "test", "shards": 2, "n": 2, "temperature": 0.8, "k": [1, 2]}
    configfile = _config(
        tmp_path,
        {
            "evaluation": {
                "backend": "transformers",
                "batch_size": 2,
                "max_new_tokens": 8,
                "benchmarks": {"world_test": bench},
            }
        },
    )
    return Case(
        "generate",
        configfile,
        lambda out: {
            **_student_shard(
                model, "shard-1.jsonl", benchmark="world_test", bench_path=tmp_path / "bench.jsonl"
            )(out),
            "info_path": out / "shard-1.info.json",
        },
        "out_path",
        "shard-1.jsonl.partial",
        "resuming generation",
        "generate",
        lambda out: range(2, len(read_jsonl(out)) // 2, 2),
        _same_bytes,
    )


def distill_case(tmp_path: Path, tiny_llama: Any, tokenizer: Any, samples: Any) -> Case:
    """leaf_instr on 12 groups (9 trained, 3 held out; 5 steps of 2 per epoch), 2 epochs,
    keep: best, a checkpoint every 2 steps; the student has attention dropout, so a resume that
    lost its RNG state would end elsewhere."""
    _, inputs = stage_inputs(
        tiny_llama,
        tokenizer,
        samples,
        tmp_path,
        12,
        {
            "epochs": 2,
            "global_batch": 2,
            "micro_batch": 1,
            "lr": 0.003,
            "val_fraction": 0.25,
            "keep": "best",
            "checkpoint_every": 2,
        },
    )
    return Case(
        "distill",
        tmp_path / "config.yaml",
        lambda out: dict(
            **inputs,
            out_dir=out / "leaf_instr",
            checkpoint_dir=out / "checkpoints",
            threads=1,
        ),
        "out_dir",
        "checkpoints/state.pt",
        "resuming from",
        r"distill [\w-]+",
        lambda out: range(1, json.loads((out / "training.json").read_text())["steps"]),
        _same_model,
    )


CASES = {"score": score_case, "generate": generate_case, "distill": distill_case}


@pytest.fixture(scope="module")
def forker() -> Iterator[faults.Forker]:
    server = faults.Forker()
    yield server
    server.close()


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """A stage run in this process sets torch's thread count; leave other tests theirs."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _kill_point(
    rng: random.Random, case: Case, output: Path, published: list[Path]
) -> tuple[str, dict[str, Any]]:
    """A point drawn from the stage's progress-bar counts with work left and from the publishes
    of an uninterrupted run (just before each, or just after each but the last): what it is, and
    how `Forker.run` kills there."""
    points: list[tuple[str, dict[str, Any]]] = [
        (f"at progress {k}", dict(kill_at=(case.bar, k))) for k in case.kill_points(output)
    ]
    for k, target in enumerate(published, start=1):
        for when in ("before", "after")[: 1 if k == len(published) else 2]:
            points.append(
                (
                    f"{when} publish {k} of {len(published)} ({target.name})",
                    dict(env={faults.KILL_AT_PUBLISH: f"{k}:{when}"}),
                )
            )
    return rng.choice(points)


@pytest.mark.parametrize("stage", sorted(CASES))
def test_killed_stage_rerun_gives_the_uninterrupted_output(
    stage: str,
    request: Any,
    tmp_path: Path,
    tiny_llama: Any,
    tokenizer: Any,
    samples: Any,
    monkeypatch: Any,
    forker: faults.Forker,
) -> None:
    """The same command three times: SIGKILLed at a drawn point; SIGKILLed again just before it
    publishes its output, when all work is done; then to the end. Neither killed run leaves the
    output; each rerun resumes from the state left (the partial file, the checkpoint) when there
    is one; the last run removes every temporary and writes what an uninterrupted run in this
    process writes (Parquet: the same frame; JSONL: the same bytes; a model: the same tensors)."""
    case = CASES[stage](tmp_path / "inputs", tiny_llama, tokenizer, samples)
    reference = case.args(tmp_path / "reference")
    published = faults.spy_publishes(monkeypatch)
    with torch_threads_kept():
        getattr(stages, stage)(case.config(), **reference)
    monkeypatch.undo()

    args = case.args(tmp_path / "run")
    output, argv = Path(args[case.output]), faults.leafpipe_argv(stage, args, case.configfile)
    state = tmp_path / "run" / case.resumable if case.resumable else None
    drawn, how = _kill_point(
        random.Random(f"{SEED}/{request.node.name}"), case, Path(reference[case.output]), published
    )
    last = {"env": {faults.KILL_AT_PUBLISH: f"{output}:before"}}
    for where, kill in (
        (f"killed {drawn}", how),
        ("killed again just before publishing", last),
        ("rerun", {}),
    ):
        # A checkpoint counts once it holds a step; a partial generation file, once it holds a
        # batch.
        resumable = (
            state is not None
            and state.is_file()
            and (stage != "generate" or len(state.read_text().splitlines()) > 1)
        )
        run = forker.run(argv, **kill)
        if resumable:
            assert case.resumed in run.stderr, (
                f"{where}: did not resume from {state}\n{run.stderr[-3000:]}"
            )
        if kill:
            assert run.killed, f"{where}: the run was not killed\n{run.stderr[-3000:]}"
            assert not output.exists(), f"{where}: the killed run left {output}"
    assert run.returncode == 0, f"the rerun failed after being {drawn}\n{run.stderr[-3000:]}"
    assert faults.temporaries(tmp_path) == [], drawn
    assert state is None or not state.exists(), f"the rerun left {state}"
    case.same(output, Path(reference[case.output]))


def test_stage_over_the_file_size_limit_fails_clearly_and_writes_nothing(
    tmp_path: Path,
    tiny_llama: Any,
    tokenizer: Any,
    samples: Any,
) -> None:
    """`leafpipe score` (a fresh interpreter) whose shard may not pass 4 kB: the job
    fails, says which file and why, and leaves neither the shard nor a temporary."""
    case = score_case(tmp_path, tiny_llama, tokenizer, samples)
    args = case.args(tmp_path / "scores")
    failed = faults.run(
        faults.leafpipe_argv("score", args, case.configfile),
        env=faults.child_env(),
        preexec_fn=faults.limit_file_size(4096),
    )
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert f"cannot write {args['out_path']}: over the file-size limit" in failed.stderr, (
        failed.stderr[-3000:]
    )
    assert "nothing was written" in failed.stderr and "File too large" in failed.stderr
    assert not Path(args["out_path"]).exists()
    assert faults.temporaries(tmp_path) == []
