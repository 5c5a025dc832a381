"""Generation under a protocol: the prompt holds the row's system prompt and answer prefix, and
the graded answer is the prefix followed by the completion."""

from __future__ import annotations

import torch

from leafpipe.evaluation.generation import completion_record, generate
from leafpipe.evaluation.protocols import PROTOCOLS, prompt_parts, protocol_rows
from leafpipe.evaluation.registry import grade_generations
from leafpipe.text.templates import encode_prompt

SYSTEM = "You count apples."
PREFIX = "Step 1:"
MAX_NEW = 6


def test_a_tiny_model_completes_the_prompt_with_the_system_prompt_and_the_prefix(
    tokenizer, tiny_qwen2
):
    model = tiny_qwen2(0)
    row = {"id": "r", "instruction": "Tom has 3 apples", "system": SYSTEM, "prefix": PREFIX}
    (record,) = generate(model, tokenizer, [row], max_new_tokens=MAX_NEW, batch_size=1)
    prompt = encode_prompt(tokenizer, row["instruction"], system=SYSTEM, prefix=PREFIX)
    bare = encode_prompt(tokenizer, row["instruction"])
    assert record["prompt_tokens"] == len(prompt) > len(bare)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=MAX_NEW,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    generated = out[0, len(prompt) :].tolist()
    text = tokenizer.decode(generated, skip_special_tokens=True)
    assert record["completion"] == PREFIX + text, "the answer is the prefix, then what was made"
    assert record["completion_tokens"] == len(generated)


def test_the_graded_code_is_the_prefix_that_opens_the_fence_and_the_completion():
    task = {
        "id": "HumanEval/0",
        "task": "code",
        "instruction": "",
        "question": "def add(x, y):\n    pass",
        "answer": None,
        "code": {
            "kind": "humaneval",
            "prompt": "def add(x, y):\n    pass\n",
            "entry_point": "add",
            "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
            "cases": [],
        },
    }
    (row,) = protocol_rows(PROTOCOLS["evalplus"], [task], "he", "humaneval")
    # The model wrote the function and stopped at evalplus' "\n```\n": no fence of its own.
    record = completion_record(row, 0, "def add(x, y):\n    return x + y", "stop", 10, 9)
    assert record["completion"].startswith(row["prefix"]) and row["prefix"].endswith("```python\n")
    graded, summary = grade_generations([row], [record], {"timeout_s": 10.0}, workers=1)
    assert graded[0]["correct"] and summary["accuracy"] == 1.0
    unfenced = {**record, "completion": "I would write def add(x, y): return x + y"}
    assert not grade_generations([row], [unfenced], {"timeout_s": 10.0}, workers=1)[0][0]["correct"]


def test_rows_written_before_protocols_render_as_leafpipes_prompts(tokenizer):
    row = {"id": "r", "instruction": "What is 2 + 3?"}
    assert prompt_parts(row) == {"system": None, "history": (), "prefix": ""}
    assert encode_prompt(tokenizer, row["instruction"], **prompt_parts(row)) == encode_prompt(
        tokenizer, row["instruction"]
    )
