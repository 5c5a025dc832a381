"""The vLLM backend's adapter, against a stand-in `vllm` module (vLLM needs a GPU): it must send
the same prompt token ids, settings and end-of-turn tokens, run tensor-parallel over the job's
GPUs as the heads allow, and write records with generate()'s fields and an info of its settings."""

import json
import logging
import sys
import types
from dataclasses import dataclass, field

import pytest
import torch
from tiny_models import tiny_config
from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, LlamaForCausalLM

from leafpipe.config import validate_config
from leafpipe.evaluation import generation_vllm
from leafpipe.evaluation.generation import SamplingSpec, generate, transformers_info
from leafpipe.evaluation.generation_vllm import VllmSetup, generate_vllm, vllm_setup
from leafpipe.evaluation.protocols import stop_strings
from leafpipe.files.atomic import write_jsonl
from leafpipe.stages.evaluation import generate as generate_stage
from leafpipe.stages.specs import stage_config
from leafpipe.text.templates import encode_prompt

SIX_HEADS = dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=3)


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
    setup = VllmSetup(tensor_parallel_size=2, stop_token_ids=(tokenizer.eos_token_id, 5))
    out = generate_vllm(tmp_path, tokenizer, rows, setup=setup, max_new_tokens=16, sampling=spec)
    assert fake_vllm["prompts"] == [
        {"prompt_token_ids": encode_prompt(tokenizer, r["instruction"])} for r in rows
    ]
    assert fake_vllm["params"] == dict(
        n=2,
        temperature=0.7,
        top_p=0.9,
        max_tokens=16,
        stop=["\n\n"],
        stop_token_ids=[tokenizer.eos_token_id, 5],
        seed=4,
    )
    llm = fake_vllm["llm"]
    assert (llm["model"], llm["seed"], llm["tensor_parallel_size"]) == (str(tmp_path), 4, 2)
    assert llm["dtype"] == "bfloat16"
    assert [(o["id"], o["sample"], o["completion"], o["finish_reason"]) for o in out] == [
        ("a", 0, "c0.0", "stop"),
        ("a", 1, "c0.1", "length"),
        ("b", 0, "c1.0", "stop"),
        ("b", 1, "c1.1", "length"),
    ]
    reference = generate(tiny_llama(0), tokenizer, rows[:1], max_new_tokens=2, batch_size=1)[0]
    assert set(out[0]) == set(reference)  # the same record fields as the transformers backend
    assert "reference" not in out[2]


@pytest.fixture
def six_heads(tokenizer, tmp_path):
    """A model folder with no weights: a 6-head config, the tokenizer (eos `<|im_end|>`) and a
    generation_config.json whose eos adds `<|im_start|>`."""
    folder = tmp_path / "six_heads"
    tiny_config(LlamaConfig, tokenizer, **SIX_HEADS).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    extra = tokenizer.convert_tokens_to_ids("<|im_start|>")
    GenerationConfig(eos_token_id=[tokenizer.eos_token_id, extra]).save_pretrained(folder)
    return folder


def test_the_generate_stage_runs_vllm_over_the_gpus_the_heads_divide_and_records_its_settings(
    fake_vllm, six_heads, tokenizer, tmp_path, monkeypatch, caplog
):
    """The job's claim left it 4 GPUs (all it sees); 6 heads split over 3 at most, so one idles
    with a warning. Completions stop at the union of both eos lists, and the info says so."""
    monkeypatch.setattr(generation_vllm, "vllm_usable", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    config = validate_config(
        {
            "models": {"teacher": {}, "student": {}},
            "evaluation": {"backend": "vllm", "benchmarks": {"g": {"kind": "gsm8k"}}},
        }
    )
    scoped = stage_config("generate", config, {"benchmark": "g", "model": "teacher"})
    write_jsonl([{"id": "a", "instruction": "What is 2 + 3?", "answer": "5"}], tmp_path / "g.jsonl")
    out, info = tmp_path / "gen.jsonl", tmp_path / "gen.info.json"
    with caplog.at_level(logging.WARNING, logger=generation_vllm.__name__):
        generate_stage(scoped, "teacher", "g", six_heads, tmp_path / "g.jsonl", out, info)
    assert fake_vllm["llm"]["tensor_parallel_size"] == 3
    assert "vLLM runs tensor-parallel over 3 and 1 of the job's GPUs go unused" in caplog.text
    assert fake_vllm["params"]["stop_token_ids"] == [tokenizer.eos_token_id, 1]
    assert json.loads(info.read_text()) == {
        "backend": "vllm",
        "dtype": "bfloat16",
        "stop_token_ids": [tokenizer.eos_token_id, 1],
        "stop_tokens": ["<|im_end|>", "<|im_start|>"],
        "stop_strings": list(stop_strings(scoped["evaluation"]["benchmarks"]["g"])),
        "tensor_parallel_size": 3,
    }
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a"]


def test_gpus_that_divide_the_heads_are_all_used_without_a_warning(six_heads, tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger=generation_vllm.__name__):
        assert vllm_setup(six_heads, tokenizer, gpus=3).tensor_parallel_size == 3
    assert not caplog.records


def test_gpus_that_divide_the_heads_but_not_the_key_value_heads_are_not_used(six_heads, tokenizer):
    """2 GPUs divide the 6 heads, but not the 3 key-value heads, nor are they a multiple of them."""
    assert vllm_setup(six_heads, tokenizer, gpus=2).tensor_parallel_size == 1


def test_a_folder_without_a_generation_config_stops_at_the_tokenizers_eos(six_heads, tokenizer):
    (six_heads / "generation_config.json").unlink()
    assert vllm_setup(six_heads, tokenizer, gpus=1).stop_token_ids == (tokenizer.eos_token_id,)


def test_both_backends_stop_at_the_same_tokens_of_one_model_folder(six_heads, tokenizer):
    """transformers reads the eos ids from the loaded model, vLLM from the folder's files: the
    records they write agree on everything but the backend, dtype and vLLM's own setting."""
    LlamaForCausalLM(tiny_config(LlamaConfig, tokenizer, **SIX_HEADS)).save_pretrained(six_heads)
    GenerationConfig(eos_token_id=[tokenizer.eos_token_id, 1]).save_pretrained(six_heads)
    model = AutoModelForCausalLM.from_pretrained(six_heads)
    loaded = transformers_info(model, tokenizer, ("\n\n",))
    folder = vllm_setup(six_heads, tokenizer, gpus=1).info(tokenizer, ("\n\n",))
    assert (loaded["backend"], loaded["dtype"]) == ("transformers", "float32")
    assert folder == {**loaded, "backend": "vllm", "dtype": "bfloat16", "tensor_parallel_size": 1}
