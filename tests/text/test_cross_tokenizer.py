"""A teacher and a student with different tokenizers and chat templates, through the CLI stages
from scoring to counterfactuals: scores are aligned on characters and detection runs on the
student's tokens."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from chat_families import family_tokenizer
from tiny_models import save_tiny_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from leafpipe.cli import main
from leafpipe.files.atomic import read_jsonl, write_jsonl
from leafpipe.text.templates import INSTRUCTION, encode_sample

DISTRACTORS = ["Mia owns 9 red cars.", "The sky was blue on day 8."]


@pytest.fixture(scope="module")
def run(tmp_path_factory, samples):
    root = tmp_path_factory.mktemp("cross")
    texts = [t for pair in samples for t in pair] * 20
    teacher_tok, student_tok = (
        family_tokenizer("qwen2", texts, 400),
        family_tokenizer("llama3", texts, 300),
    )
    save_tiny_model(Qwen2Config, Qwen2ForCausalLM, teacher_tok, root / "teacher", seed=1)
    save_tiny_model(LlamaConfig, LlamaForCausalLM, student_tok, root / "student", seed=2)
    corpus = []
    for k, (instruction, response) in enumerate(samples):
        at = next(instruction.find(d) for d in DISTRACTORS if d in instruction)
        span = [at, at + len(next(d for d in DISTRACTORS if d in instruction))]
        corpus.append(
            {
                "id": f"s{k}",
                "instruction": instruction,
                "response": response,
                "distractor_spans": [span],
            }
        )
    write_jsonl(corpus, root / "corpus.jsonl")
    config = {
        "results": str(root / "results"),
        "models": {
            "teacher": {"path": str(root / "teacher")},
            "student": {"path": str(root / "student")},
        },
        "corpus": {"path": str(root / "corpus.jsonl")},
        "scoring": {"shards": 2},
        "detection": {"strategy": "top_k", "top_k": 3},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    cfg = ["--configfile", str(root / "config.yaml")]
    for model in ("teacher", "student"):
        shards = [str(root / f"{model}-{k}.parquet") for k in range(2)]
        for k, shard in enumerate(shards):
            assert (
                main(
                    [
                        "score",
                        *cfg,
                        "--model",
                        model,
                        "--model-dir",
                        str(root / model),
                        "--corpus-path",
                        str(root / "corpus.jsonl"),
                        "--out-path",
                        shard,
                        "--shard",
                        str(k),
                    ]
                )
                == 0
            )
        assert (
            main(
                [
                    "gather_scores",
                    *cfg,
                    "--shard-paths",
                    *shards,
                    "--out-path",
                    str(root / f"{model}.parquet"),
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "detect",
                *cfg,
                "--teacher-scores",
                str(root / "teacher.parquet"),
                "--student-scores",
                str(root / "student.parquet"),
                "--corpus-path",
                str(root / "corpus.jsonl"),
                "--out-tokens",
                str(root / "tokens.parquet"),
                "--out-metrics",
                str(root / "metrics.json"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "counterfactuals",
                *cfg,
                "--corpus-path",
                str(root / "corpus.jsonl"),
                "--tokens-path",
                str(root / "tokens.parquet"),
                "--level",
                "instr",
                "--out-path",
                str(root / "cf.jsonl"),
            ]
        )
        == 0
    )
    return root, corpus, teacher_tok, student_tok


def _instruction_offsets(tok, instruction, response) -> list[tuple[int, int]]:
    enc = encode_sample(tok, instruction, response)
    return [tuple(o) for f, o in zip(enc.fields, enc.offsets) if f == INSTRUCTION]


def test_the_two_models_really_tokenise_differently(run):
    root, corpus, teacher_tok, student_tok = run
    row = corpus[0]
    assert _instruction_offsets(
        teacher_tok, row["instruction"], row["response"]
    ) != _instruction_offsets(student_tok, row["instruction"], row["response"])
    teacher, student = (
        pd.read_parquet(root / "teacher.parquet"),
        pd.read_parquet(root / "student.parquet"),
    )
    assert set(teacher["sample_id"]) == set(student["sample_id"]) == {"s0", "s1"}


def test_detection_runs_on_the_students_tokens_with_aligned_teacher_scores(run):
    root, corpus, _, student_tok = run
    tokens = pd.read_parquet(root / "tokens.parquet").set_index("id")
    for row in corpus:
        detected = tokens.loc[row["id"]]
        instr = [
            (s, e)
            for f, s, e in zip(detected["field"], detected["char_start"], detected["char_end"])
            if f == INSTRUCTION
        ]
        assert instr == _instruction_offsets(student_tok, row["instruction"], row["response"])
        teacher_norm = np.asarray(detected["teacher_norm"], dtype=float)[: len(instr)]
        assert (
            np.isfinite(teacher_norm).all()
            and teacher_norm.min() == 0.0
            and teacher_norm.max() == 1.0
        )
        assert sum(detected["is_confounder"][: len(instr)]) == 3  # top-k within the instruction
    metrics = json.loads((root / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n_samples"] == 2 and metrics["n_planted"] > 0


def test_counterfactuals_keep_every_sample_and_prune_detected_spans(run):
    root, corpus, _, _ = run
    rows = read_jsonl(root / "cf.jsonl")
    originals = {r["source_id"]: r for r in rows if r["kind"] == "original"}
    assert set(originals) == {r["id"] for r in corpus}
    for cf in (r for r in rows if r["kind"] == "counterfactual"):
        source = next(c for c in corpus if c["id"] == cf["source_id"])
        assert len(cf["instruction"]) < len(source["instruction"])
        for removed in cf["removed"]:
            assert source["instruction"][removed["start"] : removed["end"]] == removed["text"]
