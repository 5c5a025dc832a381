"""The corpus rule's stage: every row read is kept or listed with its reason, per
corpus.on_invalid."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from leafpipe import stages
from leafpipe.config import validate_config
from leafpipe.data.accounting import corpus_accounting
from leafpipe.data.corpus import CorpusError
from leafpipe.models.pretrain import save_model

GOOD = {"id": "a", "instruction": "Add 2 and 3.", "response": "2 + 3 = 5.\nThe answer is 5."}
LINES = [
    json.dumps(GOOD),
    '{"id": "b", "instruction": "Half of 8?", "response": ""}',
    '{"id": "c", "instruction": "Broken',
    json.dumps({**GOOD, "id": "d", "response": "8 / 2 = 4.\n" * 40}),  # long
    json.dumps(GOOD),  # repeats id a
]


def _config(corpus: Path, **settings: object) -> dict:
    return validate_config(
        {"models": {"teacher": {}, "student": {}}, "corpus": {"path": str(corpus), **settings}}
    )


def _run(
    config: dict, tmp_path: Path, source: Path, tokenizer_dir: Path | None = None
) -> tuple[Path, Path, Path]:
    out = (
        tmp_path / "out" / "train.jsonl",
        tmp_path / "out" / "info.json",
        tmp_path / "out" / "skipped.parquet",
    )
    stages.corpus(config, *out, corpus_file=source, tokenizer_dir=tokenizer_dir)
    return out


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(LINES) + "\n")
    return path


def test_skip_keeps_good_rows_and_lists_the_rest(tmp_path: Path, corpus: Path) -> None:
    train, info, skipped = _run(_config(corpus, on_invalid="skip"), tmp_path, corpus)
    assert [json.loads(line)["id"] for line in train.read_text().splitlines()] == ["a", "d"]
    frame = pd.read_parquet(skipped)
    assert frame["line"].tolist() == [2, 3, 5]
    assert frame["field"].tolist()[0] == "response" and "repeat" in frame["reason"].tolist()[2]
    accounted = corpus_accounting(info, train, skipped)
    assert (accounted.read, accounted.kept, accounted.skipped) == (5, 2, 3)


def test_error_names_file_line_and_field_and_writes_nothing(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(CorpusError, match=f"{corpus}:2: field 'response'"):
        _run(_config(corpus), tmp_path, corpus)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_max_tokens_counts_the_chat_rendered_sample(
    tmp_path: Path, corpus: Path, tiny_llama, tokenizer
) -> None:
    model_dir = tmp_path / "student"
    save_model(tiny_llama(), tokenizer, model_dir)
    train, _, skipped = _run(
        _config(corpus, on_invalid="skip", max_tokens=120), tmp_path, corpus, model_dir
    )
    assert [json.loads(line)["id"] for line in train.read_text().splitlines()] == ["a"]
    reasons = pd.read_parquet(skipped).set_index("line")["reason"]
    assert "too long" in reasons[4] and "max_tokens 120" in reasons[4]


def test_max_tokens_without_a_tokenizer_is_an_error(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(ValueError, match="no student tokenizer"):
        _run(_config(corpus, max_tokens=64), tmp_path, corpus)


def test_built_corpus_counts_the_rows_left_for_evaluation(tmp_path: Path) -> None:
    """GSM8K's worked solutions (the shipped set), rows 8..9, checked against 8 evaluation ids."""
    held_out = tmp_path / "gsm8k.jsonl"
    held_out.write_text("".join(json.dumps({"id": f"gsm8k-{i}"}) + "\n" for i in range(8)))
    config = validate_config(
        {
            "models": {"teacher": {}, "student": {}},
            "corpus": {"benchmark": "gsm8k", "skip": 8, "limit": 2},
        }
    )
    out = (tmp_path / "train.jsonl", tmp_path / "info.json", tmp_path / "skipped.parquet")
    stages.corpus(config, *out, held_out=[held_out])
    info = json.loads(out[1].read_text())
    assert (info["rows"], info["left_out"], info["held_out_checked"]) == (2, {"corpus.skip": 8}, 8)
    train, info_path, skipped = out
    assert corpus_accounting(info_path, train, skipped).read == info["rows_read"] == 10
