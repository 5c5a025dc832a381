import pandas as pd
import pytest

from leafpipe import stages
from leafpipe.files.atomic import write_jsonl
from leafpipe.files.fingerprints import StaleInputError
from leafpipe.models.pretrain import save_model


@pytest.fixture
def setup(tmp_path, tokenizer, samples, tiny_llama):
    model_dir = tmp_path / "model"
    save_model(tiny_llama(0), tokenizer, model_dir)
    corpus = tmp_path / "corpus.jsonl"
    rows = [
        {"id": f"r{i}", "instruction": a, "response": b}
        for i in range(5)
        for a, b in [samples[i % 2]]
    ]
    write_jsonl(rows, corpus)
    return model_dir, corpus


def _config(shards):
    return {
        "scoring": {
            "max_tokens": 4096,
            "max_batch": 64,
            "loss": "mean",
            "steps": "lines",
            "shards": shards,
        },
        "detection": {"response_level": True},
    }


def test_gathered_shards_equal_one_unsharded_job(setup, tmp_path):
    model_dir, corpus = setup
    whole = tmp_path / "whole.parquet"
    stages.score(_config(1), "student", model_dir, corpus, whole)
    parts = [tmp_path / f"shard-{k}.parquet" for k in range(3)]
    for k, path in enumerate(parts):
        stages.score(_config(3), "student", model_dir, corpus, path, shard=str(k))
    assert [pd.read_parquet(p)["sample_id"].unique().tolist() for p in parts] == [
        ["r0"],
        ["r1", "r2"],
        ["r3", "r4"],
    ]
    gathered = tmp_path / "gathered.parquet"
    stages.gather_scores(parts, gathered)
    # Same rows and tokens; scores equal up to float rounding (batch mates change summation order).
    pd.testing.assert_frame_equal(
        pd.read_parquet(gathered), pd.read_parquet(whole), rtol=1e-4, atol=1e-6
    )


def test_gather_refuses_a_shard_scored_with_a_model_since_retrained(
    setup, tmp_path, tiny_llama, tokenizer
):
    """Shards are separate jobs, so a shard can outlive a change of the model its siblings are
    scored with: shard 0 (of 5: one row) scored, then the model folder overwritten by a retrained
    model (same architecture, other weights). Gathering it would mix two models' scores; it is
    refused, naming the stale shard and the model folder."""
    model_dir, corpus = setup
    shard = tmp_path / "shard-0.parquet"
    stages.score(_config(5), "student", model_dir, corpus, shard, shard="0")
    save_model(tiny_llama(1), tokenizer, model_dir)
    gathered = tmp_path / "gathered.parquet"
    with pytest.raises(StaleInputError, match=f"{shard} was made from a different {model_dir}"):
        stages.gather_scores([shard], gathered)
    assert not gathered.exists()


def test_shard_outside_the_range_is_a_clear_error():
    with pytest.raises(ValueError, match="outside 0..1"):
        stages.shard_rows([{}] * 4, 2, 2)
