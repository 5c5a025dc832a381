"""Scoring with a Llama-3-format tokenizer that has no pad token, as Llama-3.x tokenizers ship:
through `score_samples`, the `score` stage and the `leafpipe score` command."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from chat_families import shipped_tokenizer
from tiny_models import save_tiny_model
from transformers import LlamaConfig, LlamaForCausalLM

from leafpipe import stages
from leafpipe.cli import main
from leafpipe.config import load_config
from leafpipe.detect.scoring import ScoreSpec, score_samples
from leafpipe.files.atomic import write_jsonl
from leafpipe.text.tokenizer import load_tokenizer

LONGER = (
    "Ann has 2 cats and 3 dogs and a fish and a bird and a long story about her garden. "
    "How many pets?",
    "Step 1: 2 + 3 = 5.\nStep 2: a fish and a bird.\nThe answer is 7.",
)


@pytest.fixture(scope="module")
def no_pad(tmp_path_factory, samples):
    """A folder with a tiny Llama model and a Llama-3 tokenizer without a pad token, a corpus of
    samples of different lengths (so batches are padded) and a config naming both."""
    root = tmp_path_factory.mktemp("no_pad")
    tok = shipped_tokenizer("llama3", [t for pair in [*samples, LONGER] for t in pair] * 20, 300)
    save_tiny_model(LlamaConfig, LlamaForCausalLM, tok, root / "model", seed=0)
    rows = [
        {"id": f"s{i}", "instruction": a, "response": b}
        for i, (a, b) in enumerate([*samples, LONGER])
    ]
    write_jsonl(rows, root / "corpus.jsonl")
    (root / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "results": str(root / "results"),
                "models": {
                    "teacher": {"path": str(root / "model")},
                    "student": {"path": str(root / "model")},
                },
                "corpus": {"path": str(root / "corpus.jsonl")},
                "scoring": {"max_tokens": 100000},  # one padded batch
            }
        ),
        encoding="utf-8",
    )
    return root, rows


def test_the_tokenizer_really_has_no_pad_token(no_pad):
    root, _ = no_pad
    tok = load_tokenizer(root / "model")
    assert tok.pad_token is None and tok.pad_token_id is None
    assert tok.eos_token == "<|eot_id|>" and "<|start_header_id|>" in tok.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False
    )


def test_score_samples_pads_with_eos_and_batch_mates_change_nothing(no_pad):
    root, rows = no_pad
    model, tok = stages.load_model(root / "model")
    together = score_samples(model, tok, rows, ScoreSpec(max_tokens=10**6))
    alone = score_samples(model, tok, rows, ScoreSpec(max_batch=1))
    lengths = together.groupby("sample_id")["position"].max()
    assert lengths.nunique() > 1, "one batch of samples of different lengths: padding happened"
    instruction = together["part"] == "instruction"
    assert np.isfinite(together.loc[instruction, "grad_norm"]).all()
    for column in ("grad_norm", "grad_x_input"):
        np.testing.assert_allclose(together[column], alone[column], rtol=1e-4, atol=1e-7)


def test_the_score_stage_and_the_cli_score_without_a_pad_token(no_pad, tmp_path):
    root, rows = no_pad
    config = load_config(root / "config.yaml")
    stages.score(
        config, "student", root / "model", root / "corpus.jsonl", tmp_path / "stage.parquet"
    )
    assert (
        main(
            [
                "score",
                "--configfile",
                str(root / "config.yaml"),
                "--model",
                "student",
                "--model-dir",
                str(root / "model"),
                "--corpus-path",
                str(root / "corpus.jsonl"),
                "--out-path",
                str(tmp_path / "cli.parquet"),
            ]
        )
        == 0
    )
    stage, cli = (
        pd.read_parquet(tmp_path / "stage.parquet"),
        pd.read_parquet(tmp_path / "cli.parquet"),
    )
    assert stage["sample_id"].unique().tolist() == [r["id"] for r in rows]
    assert np.isfinite(stage.loc[stage["part"] == "instruction", "grad_norm"]).all()
    pd.testing.assert_frame_equal(stage, cli)
    # The paper's rules are the default: the response is cut into two segments.
    assert set(stage.loc[stage["part"] == "response", "step"]) == {0, 1}


def test_the_score_rule_scores_without_a_pad_token(no_pad):
    """The Snakemake rule, as a Llama-config run's first GPU job would run it: corpus, then
    score."""
    root, rows = no_pad
    repo = Path(__file__).resolve().parents[2]
    target = root / "results" / "seed-0" / "scores" / "teacher" / "shard-0.parquet"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            str(target),
            "--cores",
            "1",
            "--configfile",
            str(root / "config.yaml"),
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_parquet(target)
    assert set(frame["sample_id"]) <= {r["id"] for r in rows} and len(frame)
    assert np.isfinite(frame.loc[frame["part"] == "instruction", "grad_norm"]).all()
