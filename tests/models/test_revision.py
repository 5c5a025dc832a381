"""A role's pinned hub revision reaches every loader of its weights and tokenizer, in every stage
that loads models; a distilled variant, a folder of this run, gets none."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from tiny_models import tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from leafpipe.config import validate_config
from leafpipe.evaluation.generation_vllm import generate_vllm, vllm_setup
from leafpipe.models.hub_options import hub_options
from leafpipe.models.loading import load_placed_model
from leafpipe.models.pretrained import derive_student
from leafpipe.stages.specs import paths, stage_config

PIN = "0123456789abcdef0123456789abcdef01234567"
PINS = {"teacher": PIN, "student": None}
WILDCARDS = {"model": "teacher", "role": "student", "benchmark": "g"}
LOADING_STAGES = [
    "score",
    "attention",
    "generate",
    "derive_model",
    "corpus",
    "validate_counterfactuals",
    "teacher_logits",
    "distill",
]


@pytest.fixture
def config() -> dict[str, Any]:
    return validate_config(
        {
            "models": {"teacher": {"path": "org/teacher", "revision": PIN}, "student": {}},
            "evaluation": {"benchmarks": {"g": {"split": "test"}}},
        }
    )


@pytest.mark.parametrize("stage", LOADING_STAGES)
def test_every_stage_that_loads_models_may_read_the_pin(config, stage):
    """Each stage reads the pins of the roles it loads (the job's model, both, or the student's
    tokenizer), wherever it reads their trust."""
    reads, _ = paths(stage, WILDCARDS)
    roles = [role for role in PINS if f"models.{role}.revision" in reads]
    assert roles == [role for role in PINS if f"models.{role}.trust_remote_code" in reads] != []
    scoped = stage_config(stage, config, WILDCARDS)
    for role in roles:
        assert hub_options(scoped, role) == {"trust_remote_code": False, "revision": PINS[role]}


def test_a_distilled_variant_is_loaded_without_the_students_pin(config):
    config["models"]["student"]["revision"] = "v1.0"
    assert hub_options(config, "student")["revision"] == "v1.0"
    assert hub_options(config, "leaf_instr_resp")["revision"] is None


class _Weights:
    def eval(self) -> _Weights:
        return self


def test_load_placed_model_passes_the_pin_to_the_weights_and_the_tokenizer(monkeypatch):
    calls: list[tuple[str, str | None]] = []

    def recorder(name: str, result: Any):
        def from_pretrained(path, **kwargs):
            calls.append((name, kwargs["revision"]))
            return result

        return from_pretrained

    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", recorder("tokenizer", None))
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recorder("model", _Weights()))
    load_placed_model("org/teacher", revision=PIN)
    assert calls == [("tokenizer", PIN), ("model", PIN)]


def test_derive_student_loads_the_teacher_at_its_pin(tokenizer, monkeypatch, tmp_path):
    calls = []
    teacher = tiny_model(Qwen2Config, Qwen2ForCausalLM, tokenizer, 0)

    def from_pretrained(path, **kwargs):
        calls.append(kwargs["revision"])
        return teacher

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(
        "leafpipe.text.tokenizer.load_tokenizer",
        lambda path, **kwargs: calls.append(kwargs["revision"]) or tokenizer,
    )
    derive_student("org/teacher", 1, tmp_path / "student", revision=PIN)
    assert calls == [PIN, PIN] and (tmp_path / "student" / "config.json").is_file()


def test_vllm_loads_the_weights_and_the_tokenizer_at_the_pin(tokenizer, monkeypatch):
    made: dict[str, Any] = {}

    class LLM:
        def __init__(self, **kwargs):
            made.update(kwargs)

        def generate(self, prompts, params, use_tqdm=True):
            return []

    fake = types.SimpleNamespace(LLM=LLM, SamplingParams=lambda **kwargs: kwargs)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    setup = vllm_setup("org/teacher", tokenizer, revision=PIN, gpus=1)
    assert (
        generate_vllm("org/teacher", tokenizer, [], setup=setup, max_new_tokens=4, revision=PIN)
        == []
    )
    assert (made["revision"], made["tokenizer_revision"]) == (PIN, PIN)
