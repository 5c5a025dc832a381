"""Models with the tokenizer, chat template and generation_config.json that their family's
repository ships (tiny random-init Llamas beneath), run through the stages as the workflow's rules
bind them (the config cut down to what each stage declares).

Llama-3-8B-Instruct's go from score to generate: its tokenizer has no pad token, and its
generation_config lists <|end_of_text|> beside the tokenizer's eos <|eot_id|>. Qwen2-7B-Instruct's
chat template, which injects a default system prompt into a chat without one, goes through score
and generate: the injected prompt is template text, never scored, and a question is asked in the
chat it was scored (and trained) in, default system prompt included.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from chat_families import shipped_generation_config, shipped_tokenizer
from tiny_models import save_tiny_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from leafpipe import stages
from leafpipe.config import for_seed, validate_config
from leafpipe.execution.adapter import stage_arguments
from leafpipe.files.atomic import read_jsonl, write_jsonl
from leafpipe.text.templates import encode_sample

QUESTION = {"question": "Sam has 4 pens and buys 3 more. How many pens?", "answer": "#### 7"}
ANSWER = "Step 1: Sam starts with 4 pens.\nStep 2: 4 + 3 = 7.\nThe answer is 7."
TINY = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1)
MAX_NEW = 4
QWEN2_DEFAULT_SYSTEM = "You are a helpful assistant."


def _run(stage: str, config: dict, wildcards: dict | None = None, **files) -> None:
    """`stage` as the adapter runs its rule: the arguments bound by name from the job's wildcards
    and files, the config cut down to what the stage declares (threads left as they are)."""
    job = SimpleNamespace(
        rule=stage, config=config, wildcards=wildcards or {}, threads=None, output={}, params={}
    )
    job.input = files  # inputs and outputs alike: each binds by its name
    func = getattr(stages, stage)
    func(**stage_arguments(job, func))


def _shipped_run(tmp_path_factory, family: str, pairs: list[tuple[str, str]]):
    """A folder with a teacher and a student (seeds 0 and 1) as `family`'s repository ships
    them, the run's config, and a one-question benchmark whose question, as the benchmark asks
    it, is also the corpus row "q" after `pairs`: (folder, config, tokenizer, corpus rows)."""
    root = tmp_path_factory.mktemp(family)
    texts = [t for pair in pairs for t in pair] + [QUESTION["question"], ANSWER]
    tok = shipped_tokenizer(family, texts * 20)
    generation = shipped_generation_config(family, tok)
    for role, seed in (("teacher", 0), ("student", 1)):
        save_tiny_model(LlamaConfig, LlamaForCausalLM, tok, root / role, seed, generation, **TINY)
    rows = [{"id": f"s{i}", "instruction": a, "response": b} for i, (a, b) in enumerate(pairs)]
    write_jsonl(rows, root / "corpus.jsonl")
    write_jsonl([QUESTION], root / "gsm8k.jsonl")
    raw = {
        "models": {role: {"path": str(root / role)} for role in ("teacher", "student")},
        "corpus": {"path": str(root / "corpus.jsonl")},
        "scoring": {"max_tokens": 100000},  # one padded batch
        "validity": {"student": True},  # the check loads both models
        # One optimiser step over every original and counterfactual.
        "distill": {"epochs": 1, "val_fraction": 0, "micro_batch": 64, "global_batch": 64},
        "evaluation": {
            "backend": "transformers",
            "max_new_tokens": MAX_NEW,
            "benchmarks": {"g": {"kind": "gsm8k"}},
        },
    }
    config = for_seed(validate_config(raw))
    _run(
        "benchmark_data",
        config,
        {"benchmark": "g"},
        out_path=root / "g.jsonl",
        info_path=root / "g.info.json",
        input_path=root / "gsm8k.jsonl",
    )
    (asked,) = read_jsonl(root / "g.jsonl")
    rows.append({"id": "q", "instruction": asked["instruction"], "response": ANSWER})
    write_jsonl(rows, root / "corpus.jsonl")
    return root, config, tok, rows


def _score_both(root, config) -> dict[str, pd.DataFrame]:
    """Each model's scores of the corpus, in one shard, gathered as the workflow gathers them."""
    frames = {}
    for model in ("teacher", "student"):
        shard = root / f"{model}-shard-0.parquet"
        _run(
            "score",
            config,
            {"model": model, "shard": "0"},
            model_dir=root / model,
            corpus_path=root / "corpus.jsonl",
            out_path=shard,
        )
        _run("gather_scores", config, shard_paths=[shard], out_path=root / f"{model}.parquet")
        frames[model] = pd.read_parquet(root / f"{model}.parquet")
    return frames


def _generate(root, config, model_dir) -> tuple[list[dict], dict]:
    """`model_dir`'s completions of the benchmark and their info."""
    out, info = root / "generations.jsonl", root / "generations.info.json"
    _run(
        "generate",
        config,
        {"model": "student", "benchmark": "g"},
        model_dir=model_dir,
        bench_path=root / "g.jsonl",
        out_path=out,
        info_path=info,
    )
    return read_jsonl(out), json.loads(info.read_text(encoding="utf-8"))


def _assert_scores_cover_the_instructions(scores: pd.DataFrame, rows: list[dict], tok) -> None:
    """Every instruction token has a finite score, the scored instruction tokens spell the
    instruction, and no scored position lies beyond the sample's own chat (in its padding)."""
    assert scores.groupby("sample_id")["position"].max().nunique() > 1, "no batch was padded"
    for row in rows:
        own = scores[scores["sample_id"] == row["id"]]
        instruction = own[own["part"] == "instruction"]
        assert np.isfinite(instruction["grad_norm"]).all()
        assert "".join(instruction["token"]) == row["instruction"]
        assert own["position"].max() < len(encode_sample(tok, row["instruction"], row["response"]))


def _assert_asked_as_scored(record: dict, scores: pd.DataFrame) -> None:
    """The benchmark question's prompt has as many tokens as its scored chat before the
    response: evaluation asks it in the chat that scoring and training used."""
    response = scores[(scores["sample_id"] == "q") & (scores["part"] == "response")]
    assert record["prompt_tokens"] == response["position"].min()


@pytest.fixture(scope="module")
def llama3(tmp_path_factory, samples):
    """The Llama-3 run from score to the distilled student's generations; what each stage
    wrote."""
    root, config, tok, rows = _shipped_run(tmp_path_factory, "llama3", samples)
    scores = _score_both(root, config)
    _run(
        "detect",
        config,
        teacher_scores=root / "teacher.parquet",
        student_scores=root / "student.parquet",
        corpus_path=root / "corpus.jsonl",
        out_tokens=root / "tokens.parquet",
        out_metrics=root / "metrics.json",
    )
    level = {"level": "instr"}
    _run(
        "counterfactuals",
        config,
        level,
        corpus_path=root / "corpus.jsonl",
        tokens_path=root / "tokens.parquet",
        out_path=root / "instr.jsonl",
    )
    _run(
        "validate_counterfactuals",
        config,
        level,
        teacher_dir=root / "teacher",
        student_dir=root / "student",
        data_path=root / "instr.jsonl",
        out_path=root / "instr.valid.jsonl",
        out_summary=root / "instr.validity.json",
        corpus_path=root / "corpus.jsonl",
        tokens_path=root / "tokens.parquet",
    )
    _run(
        "distill",
        config,
        {"variant": "leaf_instr"},
        teacher_dir=root / "teacher",
        student_dir=root / "student",
        data_path=root / "instr.valid.jsonl",
        out_dir=root / "leaf_instr",
    )
    records, info = _generate(root, config, root / "leaf_instr")
    return dict(root=root, tok=tok, rows=rows, scores=scores, records=records, info=info)


def test_the_llama3_models_ship_without_a_pad_token_and_with_two_eos_ids(llama3):
    tok, root = llama3["tok"], llama3["root"]
    assert tok.pad_token is None and tok.pad_token_id is None and tok.eos_token == "<|eot_id|>"
    saved = json.loads((root / "teacher" / "generation_config.json").read_text())
    assert saved["eos_token_id"] == tok.convert_tokens_to_ids(["<|end_of_text|>", "<|eot_id|>"])


def test_every_instruction_token_is_scored_and_no_padding_is(llama3):
    for scores in llama3["scores"].values():
        _assert_scores_cover_the_instructions(scores, llama3["rows"], llama3["tok"])


def test_detected_spans_become_counterfactuals_that_one_step_distils(llama3):
    root, rows = llama3["root"], llama3["rows"]
    tokens = pd.read_parquet(root / "tokens.parquet").set_index("id")
    for row in rows:
        assert tokens.loc[row["id"], "unscored"] == "{}"
        spans = json.loads(tokens.loc[row["id"], "spans"])
        assert any(span["field"] == "instruction" for span in spans)
    trained_on = read_jsonl(root / "instr.valid.jsonl")
    pruned = [r for r in trained_on if r["kind"] == "counterfactual"]
    assert {r["source_id"] for r in pruned} == {r["id"] for r in rows}
    originals = {r["id"]: r["instruction"] for r in rows}
    assert all(len(r["instruction"]) < len(originals[r["source_id"]]) for r in pruned)
    # The validity check measured each kept counterfactual's loss rise with both models.
    rises = [r[f"{role}_rise"] for r in pruned for role in ("teacher", "student")]
    assert np.isfinite(rises).all()
    training = json.loads((root / "leaf_instr" / "training.json").read_text())
    assert (training["variant"], training["steps"]) == ("leaf_instr", 1)
    distilled = AutoModelForCausalLM.from_pretrained(root / "leaf_instr")
    student = AutoModelForCausalLM.from_pretrained(root / "student")
    assert any(
        not np.array_equal(a.detach().numpy(), b.detach().numpy())
        for a, b in zip(distilled.parameters(), student.parameters())
    ), "the optimiser step left the student as it was"


def test_the_distilled_student_keeps_both_eos_ids_and_generates_with_both_as_stop_tokens(llama3):
    tok, root, info = llama3["tok"], llama3["root"], llama3["info"]
    saved = json.loads((root / "leaf_instr" / "generation_config.json").read_text())
    assert saved["eos_token_id"] == tok.convert_tokens_to_ids(["<|end_of_text|>", "<|eot_id|>"])
    assert info["stop_tokens"] == ["<|eot_id|>", "<|end_of_text|>"]
    assert info["stop_token_ids"] == tok.convert_tokens_to_ids(info["stop_tokens"])
    (record,) = llama3["records"]
    assert record["completion_tokens"] <= MAX_NEW
    _assert_asked_as_scored(record, llama3["scores"]["student"])


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory, samples):
    """The Qwen2 run through score and the student's generations; one instruction opens with the
    template's own default system prompt."""
    (instruction, response), *others = samples
    pairs = [(f"{QWEN2_DEFAULT_SYSTEM} {instruction}", response), *others]
    root, config, tok, rows = _shipped_run(tmp_path_factory, "qwen2", pairs)
    scores = _score_both(root, config)["student"]
    records, info = _generate(root, config, root / "student")
    return dict(tok=tok, rows=rows, scores=scores, records=records, info=info)


def test_the_injected_system_prompt_is_never_scored(qwen2):
    """Only the instruction's tokens are scored: its own copy of the default system prompt, not
    the one the template injects before the user turn."""
    tok, scores, rows = qwen2["tok"], qwen2["scores"], qwen2["rows"]
    _assert_scores_cover_the_instructions(scores, rows, tok)
    injected = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert injected.startswith(f"<|im_start|>system\n{QWEN2_DEFAULT_SYSTEM}<|im_end|>")
    header = f"<|im_start|>system\n{QWEN2_DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n"
    before = len(tok(header, add_special_tokens=False)["input_ids"])
    assert (
        scores.loc[scores["part"] == "instruction", "position"]
        .groupby(scores["sample_id"])
        .min()
        .eq(before)
        .all()
    )


def test_a_question_is_asked_with_the_default_system_prompt_it_was_scored_with(qwen2):
    tok, info = qwen2["tok"], qwen2["info"]
    assert info["stop_tokens"] == ["<|im_end|>", "<|endoftext|>"]
    assert info["stop_token_ids"] == tok.convert_tokens_to_ids(info["stop_tokens"])
    (record,) = qwen2["records"]
    _assert_asked_as_scored(record, qwen2["scores"])
