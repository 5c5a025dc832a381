"""The report's Generation table: per model, its backend, dtype, stop tokens and vLLM's
tensor-parallel size, from the score files' `generation`; a model generated two ways shows both."""

import json

from report_text import section

from leafpipe.config import validate_config
from leafpipe.files.atomic import write_json, write_jsonl
from leafpipe.report.build import build_report
from leafpipe.stages.evaluation import grade
from leafpipe.stages.specs import stage_config

VLLM = {
    "backend": "vllm",
    "dtype": "bfloat16",
    "stop_token_ids": [151645, 151643],
    "stop_tokens": ["<|im_end|>", "<|endoftext|>"],
    "stop_strings": [],
    "tensor_parallel_size": 4,
}
TRANSFORMERS = {
    "backend": "transformers",
    "dtype": "float32",
    "stop_token_ids": [2, 13],
    "stop_tokens": ["<|im_end|>", "\n"],
    "stop_strings": ["\n\n"],
}


def _score(model, bench, generation):
    return {
        "model": model,
        "benchmark": bench,
        "seed": 0,
        "n": 10,
        "correct": 5,
        "accuracy": 0.5,
        "ci_low": 0.2,
        "ci_high": 0.8,
        "generation": generation,
    }


def _summary(tmp_path, scores):
    build_report(
        scores,
        {},
        tmp_path,
        model_order=["teacher", "kd"],
        model_labels={"teacher": "Teacher", "kd": "KD w/o mask"},
        benchmark_labels={"a": "A", "b": "B"},
    )
    return (tmp_path / "summary.md").read_text()


def test_the_generation_table_names_each_models_backend_dtype_stop_tokens_and_tp(tmp_path):
    scores = [
        _score("teacher", "a", [VLLM]),
        _score("teacher", "b", [VLLM]),
        _score("kd", "a", [TRANSFORMERS]),
        _score("kd", "b", [{**TRANSFORMERS, "dtype": "bfloat16"}]),
    ]
    table = section(_summary(tmp_path, scores), "Generation")
    assert "| Teacher | vllm | bfloat16 | `<\\|im_end\\|>`, `<\\|endoftext\\|>` | 4 |" in table
    assert (
        "| KD w/o mask | transformers | float32 / bfloat16 | `<\\|im_end\\|>`, `\\n` | – |" in table
    )


def test_scores_without_generation_settings_leave_the_table_out(tmp_path):
    assert "## Generation" not in _summary(tmp_path, [_score("teacher", "a", [])])


def test_grading_names_the_distinct_settings_of_the_shards(tmp_path):
    """Two shards made alike and one without rows: the scores name one setting."""
    config = validate_config(
        {
            "models": {"teacher": {}, "student": {}},
            "evaluation": {"benchmarks": {"g": {"kind": "gsm8k"}}},
        }
    )
    scoped = stage_config("grade", config, {"benchmark": "g", "model": "teacher"})
    rows = [
        {"id": i, "task": "math", "instruction": "q", "answer": "5", "code": None} for i in "ab"
    ]
    write_jsonl(rows, tmp_path / "g.jsonl")
    write_json({"available": True, "source": "test"}, tmp_path / "g.info.json")
    shards, infos = [], []
    for k, (row, info) in enumerate([(rows[0], TRANSFORMERS), (rows[1], TRANSFORMERS), (None, {})]):
        made = [] if row is None else [{"id": row["id"], "sample": 0, "completion": "5"}]
        shards.append(tmp_path / f"gen-{k}.jsonl")
        infos.append(tmp_path / f"gen-{k}.info.json")
        write_jsonl(made, shards[-1])
        write_json(info, infos[-1])
    grade(
        scoped,
        "teacher",
        "g",
        shards,
        tmp_path / "g.jsonl",
        tmp_path / "g.info.json",
        tmp_path / "scores.json",
        tmp_path / "graded.jsonl",
        generation_infos=infos,
        threads=1,
    )
    assert json.loads((tmp_path / "scores.json").read_text())["generation"] == [TRANSFORMERS]
