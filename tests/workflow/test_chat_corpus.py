"""A chat-format corpus (`messages`, with a system prompt and no ids) through detection and
distillation on the micro config: the issue's done-when."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake_runs import MICRO, snakemake

from leafpipe.files.atomic import read_jsonl

SYSTEM = "Solve the problem step by step."
SEED0 = "seed-0"
LEVEL = "instr_resp"


def _messages_corpus(world_rows: list[dict], path: Path) -> None:
    """The world's distill_train rows as TRL conversational rows: no id, a system prompt, the
    other fields (planted distractor spans, answer) kept."""
    with path.open("w") as out:
        for row in world_rows:
            chat = {k: v for k, v in row.items() if k not in ("id", "instruction", "response")}
            chat["messages"] = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": row["instruction"]},
                {"role": "assistant", "content": row["response"]},
            ]
            out.write(json.dumps(chat) + "\n")


@pytest.mark.slow
def test_a_messages_corpus_runs_through_detection_and_distillation(tmp_path):
    results = tmp_path / "results"
    seed = results / SEED0
    world = snakemake(results, str(seed / "world" / "distill_train.jsonl"), cores=2)
    assert world.returncode == 0, world.stderr[-4000:]
    world_rows = read_jsonl(seed / "world" / "distill_train.jsonl")
    corpus_path = tmp_path / "chat.jsonl"
    _messages_corpus(world_rows, corpus_path)
    config = yaml.safe_load(MICRO.read_text())
    config["corpus"] = {"path": str(corpus_path)}
    config["scoring"] = {**config["scoring"], "shards": 1}  # two jobs fewer
    config["distill"] = {**config["distill"], "variants": [f"leaf_{LEVEL}"], "teacher_topk": 8}
    configfile = tmp_path / "chat.yaml"
    configfile.write_text(yaml.safe_dump(config))
    model = seed / "models" / f"leaf_{LEVEL}"
    proc = snakemake(results, str(model), configfile=configfile, cores=2, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    corpus = read_jsonl(seed / "corpus" / "train.jsonl")
    assert len(corpus) == len(world_rows) and all(r["system"] == SYSTEM for r in corpus)
    assert [(r["instruction"], r["response"]) for r in corpus] == [
        (r["instruction"], r["response"]) for r in world_rows
    ]
    assert all(r["id"].startswith("chat-") for r in corpus) and "messages" not in corpus[0]
    by_id = {r["id"]: r for r in corpus}
    scores = pd.read_parquet(seed / "scores" / "teacher.parquet")
    assert set(scores["part"]) == {"instruction", "response"}
    scored = scores.groupby(["sample_id", "part"], sort=False)["token"].agg("".join)
    assert all(text == by_id[row_id][part] for (row_id, part), text in scored.items())
    assert scored.index.get_level_values(0).unique().tolist() == list(by_id)
    tokens = pd.read_parquet(seed / "detection" / "tokens.parquet")
    spans = [(r, s) for r, s in zip(tokens["id"], tokens["spans"]) for s in json.loads(s)]
    assert spans, "detection found confounders"
    for row_id, span in spans:
        text = by_id[row_id][span["field"]]
        assert span["field"] in ("instruction", "response") and span["end"] <= len(text)
    counterfactuals = read_jsonl(seed / "counterfactuals" / f"{LEVEL}.valid.jsonl")
    assert any(r["kind"] == "counterfactual" for r in counterfactuals)
    assert all(r["system"] == SYSTEM for r in counterfactuals)
    assert (seed / "teacher_logits" / f"{LEVEL}.safetensors").is_file()
    assert (model / "model.safetensors").is_file()
