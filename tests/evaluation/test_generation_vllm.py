"""The vLLM backend's adapter, against a stand-in `vllm` module (vLLM needs a GPU): it must send
the same prompt token ids and settings, and write records with generate()'s fields."""

import sys
import types
from dataclasses import dataclass, field

import pytest

from leafpipe.evaluation.generation import SamplingSpec, generate
from leafpipe.evaluation.generation_vllm import generate_vllm
from leafpipe.text.templates import encode_prompt


@dataclass
class _Completion:
    text: str
    token_ids: list
    finish_reason: str


@dataclass
class _Output:
    outputs: list = field(default_factory=list)


@pytest.fixture
def fake_vllm(monkeypatch):
    calls = {}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs):
            calls["llm"] = kwargs

        def generate(self, prompts, params, use_tqdm=True):
            calls["prompts"], calls["params"] = prompts, params.kwargs
            n = params.kwargs["n"]
            return [
                _Output(
                    [
                        _Completion(f"c{i}.{s}", [1] * (s + 1), "length" if s else "stop")
                        for s in range(n)
                    ]
                )
                for i, _ in enumerate(prompts)
            ]

    module = types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams)
    monkeypatch.setitem(sys.modules, "vllm", module)
    return calls


def test_vllm_backend_sends_the_same_prompts_and_writes_generate_records(
    fake_vllm, tokenizer, tiny_llama, tmp_path
):
    rows = [
        {"id": "a", "instruction": "What is 2 + 3?", "answer": "5"},
        {"id": "b", "instruction": "Hi"},
    ]
    spec = SamplingSpec(n=2, temperature=0.7, top_p=0.9, stop=("\n\n",), seed=4)
    out = generate_vllm(tmp_path, tokenizer, rows, max_new_tokens=16, sampling=spec)
    assert fake_vllm["prompts"] == [
        {"prompt_token_ids": encode_prompt(tokenizer, r["instruction"])} for r in rows
    ]
    assert fake_vllm["params"] == dict(
        n=2, temperature=0.7, top_p=0.9, max_tokens=16, stop=["\n\n"], seed=4
    )
    assert fake_vllm["llm"]["model"] == str(tmp_path) and fake_vllm["llm"]["seed"] == 4
    assert [(o["id"], o["sample"], o["completion"], o["finish_reason"]) for o in out] == [
        ("a", 0, "c0.0", "stop"),
        ("a", 1, "c0.1", "length"),
        ("b", 0, "c1.0", "stop"),
        ("b", 1, "c1.1", "length"),
    ]
    reference = generate(tiny_llama(0), tokenizer, rows[:1], max_new_tokens=2, batch_size=1)[0]
    assert set(out[0]) == set(reference)  # the same record fields as the transformers backend
    assert "reference" not in out[2]
