"""Running the distill stage twice and comparing its outputs bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml
from distill_groups import many_groups

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
        rows.append(
            dict(
                id=f"g{k}",
                source_id=f"g{k}",
                kind="original",
                instruction=group.original[0],
                response=group.original[1],
                removed=[],
            )
        )
        rows += [
            dict(
                id=f"g{k}#cf{j}",
                source_id=f"g{k}",
                kind="counterfactual",
                instruction=i,
                response=r,
                removed=[],
            )
            for j, (i, r) in enumerate(group.counterfactuals)
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
    return [
        sys.executable,
        "-m",
        "leafpipe.cli",
        "distill",
        "--configfile",
        str(folder / "config.yaml"),
        "--out-dir",
        str(out),
        "--checkpoint-dir",
        str(work),
        "--threads",
        str(threads),
        *(x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", str(v))),
    ]
