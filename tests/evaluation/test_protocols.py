"""Evaluation protocols: the published presets render their harness's prompts character for
character, leafpipe's own prompts are unchanged, and the entry's settings win over the preset's."""

from __future__ import annotations

import json

import pytest
import yaml
from chat_families import family_tokenizer

from leafpipe.config import SCHEMA, validate_config
from leafpipe.evaluation.converters import MATH_FORMAT, gsm8k_row, humaneval_row, math500_row
from leafpipe.evaluation.protocols import (
    PROTOCOLS,
    ProtocolError,
    max_new_tokens,
    prompt_parts,
    protocol_rows,
    stop_strings,
)
from leafpipe.evaluation.rows import InputRow
from leafpipe.stages.specs import stage_config
from leafpipe.text.templates import encode_prompt, prompt_text

GSM8K = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
}
HUMANEVAL = {
    "task_id": "HumanEval/53",
    "prompt": '\n\ndef add(x: int, y: int):\n    """Add two numbers x and y\n    >>> add(2, 3)\n'
    '    5\n    """\n',
    "entry_point": "add",
    "test": "\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n",
}


@pytest.fixture(scope="module")
def qwen2():
    """A tokenizer with Qwen2-7B-Instruct's chat template, character for character."""
    return family_tokenizer("qwen2", [GSM8K["question"], HUMANEVAL["prompt"]] * 5)


def _asked(name: str, kind: str, row: dict) -> dict:
    return protocol_rows(PROTOCOLS[name], [row], "bench", kind)[0]


def test_qwen25_math_cot_renders_qwen25_maths_published_prompt(qwen2):
    row = _asked("qwen25-math-cot", "gsm8k", gsm8k_row(InputRow("test.jsonl", 1, 0, GSM8K)))
    # QwenLM/Qwen2.5-Math @ a45202b, evaluation/utils.py PROMPT_TEMPLATES["qwen25-math-cot"]
    # with {input} the stripped question (parser.py parse_question), 0-shot as sh/eval.sh runs it.
    published = (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n"
        f"<|im_start|>user\n{GSM8K['question']}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert prompt_text(qwen2, row["instruction"], **prompt_parts(row)) == published
    assert (row["system"], row["history"], row["prefix"]) == (
        "Please reason step by step, and put your final answer within \\boxed{}.",
        [],
        "",
    )


def test_evalplus_renders_evalpluss_published_chat_prompt(qwen2):
    row = _asked("evalplus", "humaneval", humaneval_row(InputRow("he.jsonl", 1, 0, HUMANEVAL)))
    # evalplus/evalplus @ 26d6d00: codegen.py's instruction and response prefixes, put together
    # by provider/utility.py make_raw_chat_prompt (the task prompt stripped, in a bare fence; the
    # response up to the open python fence), with Qwen2-Instruct's default system prompt.
    published = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nPlease provide a self-contained Python script that solves the "
        "following problem in a markdown code block:\n```\n"
        'def add(x: int, y: int):\n    """Add two numbers x and y\n    >>> add(2, 3)\n'
        '    5\n    """\n```\n<|im_end|>\n'
        "<|im_start|>assistant\nBelow is a Python script with a self-contained function that "
        "solves the problem and passes corresponding tests:\n```python\n"
    )
    assert prompt_text(qwen2, row["instruction"], **prompt_parts(row)) == published
    assert encode_prompt(qwen2, row["instruction"], **prompt_parts(row)) == list(
        qwen2(published, add_special_tokens=False)["input_ids"]
    )


def test_the_leafpipe_protocol_leaves_every_prompt_as_it_was(qwen2):
    converted = gsm8k_row(InputRow("test.jsonl", 1, 0, GSM8K))
    row = _asked("leafpipe", "gsm8k", converted)
    assert row["instruction"] == f"{GSM8K['question']}\n\n{MATH_FORMAT}" == converted["instruction"]
    assert row["question"] == GSM8K["question"] and row["protocol"] == "leafpipe"
    assert encode_prompt(qwen2, row["instruction"], **prompt_parts(row)) == encode_prompt(
        qwen2, converted["instruction"]
    )


def test_a_protocol_for_other_kinds_or_without_the_question_is_an_error_naming_the_benchmark():
    math_row = math500_row(InputRow("m.jsonl", 1, 0, {"problem": "1+1?", "answer": "2"}))
    with pytest.raises(ProtocolError, match="benchmark 'bench'.*humaneval.*not kind 'gsm8k'"):
        _asked("evalplus", "gsm8k", math_row)
    unquestioned = {key: value for key, value in math_row.items() if key != "question"}
    with pytest.raises(ProtocolError, match="benchmark 'bench'.*'math500-0' has no `question`"):
        _asked("qwen25-math-cot", "math500", unquestioned)


def test_the_entrys_stop_and_token_limit_win_over_the_protocols_which_win_over_the_default():
    evaluation = {"max_new_tokens": 100}
    qwen = {"protocol": "qwen25-math-cot"}
    assert max_new_tokens(evaluation, qwen) == 2048
    assert max_new_tokens(evaluation, {**qwen, "max_new_tokens": 64}) == 64
    assert max_new_tokens(evaluation, {"protocol": "leafpipe"}) == 100
    assert stop_strings(qwen) == ("</s>", "<|im_end|>", "<|endoftext|>")
    assert stop_strings({**qwen, "stop": ["\n\n\n"]}) == ("\n\n\n",)
    assert stop_strings({**qwen, "stop": []}) == (), "an empty list is the entry's own: no stops"
    assert stop_strings({}) == () and max_new_tokens(evaluation, {}) == 100


def test_the_schema_offers_exactly_the_registered_protocols():
    schema = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))
    entry = schema["definitions"]["benchmark"]["properties"]["protocol"]
    assert set(entry["enum"]) == set(PROTOCOLS) and entry["default"] in PROTOCOLS


def _config(**entry):
    return validate_config(
        {
            "models": {"teacher": {}, "student": {}},
            "evaluation": {"benchmarks": {"g": {"kind": "gsm8k", **entry}}},
        }
    )


def test_benchmark_data_writes_the_prompt_parts_into_the_rows_and_the_protocol_into_the_info(
    tmp_path,
):
    from leafpipe.stages.evaluation import benchmark_data

    source = tmp_path / "test.jsonl"
    source.write_text(json.dumps(GSM8K) + "\n", encoding="utf-8")
    scoped = stage_config("benchmark_data", _config(protocol="qwen25-math-cot"), {"benchmark": "g"})
    benchmark_data(scoped, "g", tmp_path / "g.jsonl", tmp_path / "g.info.json", source)
    (row,) = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert row["instruction"] == GSM8K["question"] and row["answer"] == "72"
    assert row["system"] == PROTOCOLS["qwen25-math-cot"].system and row["prefix"] == ""
    assert json.loads((tmp_path / "g.info.json").read_text())["protocol"] == "qwen25-math-cot"


def test_the_generate_stage_reads_the_protocols_settings_through_its_declared_keys():
    scoped = stage_config(
        "generate", _config(protocol="qwen25-math-cot"), {"benchmark": "g", "model": "teacher"}
    )
    bench = scoped["evaluation"]["benchmarks"]["g"]
    assert max_new_tokens(scoped["evaluation"], bench) == 2048
    assert stop_strings(bench) == PROTOCOLS["qwen25-math-cot"].stop


def test_few_shot_turns_come_before_the_problem_in_the_template_s_own_format(qwen2):
    """No shipped preset is few-shot; a protocol with shots renders them as earlier chat turns."""
    shots = (("user", "What is 1 + 1?"), ("assistant", "2"))
    protocol = PROTOCOLS["qwen25-math-cot"]
    few_shot = type(protocol)(**{**protocol.__dict__, "name": "few-shot", "shots": shots})
    asked = gsm8k_row(InputRow("test.jsonl", 1, 0, GSM8K))
    row = protocol_rows(few_shot, [asked], "bench", "gsm8k")[0]
    assert row["history"] == [["user", "What is 1 + 1?"], ["assistant", "2"]]
    text = prompt_text(qwen2, row["instruction"], **prompt_parts(json.loads(json.dumps(row))))
    assert text.index("<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n2") < (
        text.index(GSM8K["question"])
    )
    assert text.startswith("<|im_start|>system\nPlease reason") and text.endswith("assistant\n")
