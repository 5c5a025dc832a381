"""Shared fixtures: an offline-trained tokenizer and tiny random-init Llama/Qwen2 models."""

from __future__ import annotations

import os

import pytest
from tiny_models import tiny_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from leafpipe.text.tokenizer import train_tokenizer

# In CI, absent prerequisites fail instead of skipping (tests/support/ci_strict.py).
pytest_plugins = ["ci_strict"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SAMPLES = [
    (
        "Tom has 3 apples. Mia owns 9 red cars. Tom buys 4 more apples. "
        "How many apples does Tom have now?",
        "Step 1: Tom starts with 3 apples.\nStep 2: He buys 4 more, so 3 + 4 = 7.\n"
        "The answer is 7.",
    ),
    (
        "A box holds 12 pens. Sam gives away 5 pens. The sky was blue on day 8. "
        "How many pens are left?",
        "Step 1: The box starts with 12 pens.\nStep 2: Sam gives away 5, so 12 - 5 = 7.\n"
        "The answer is 7.",
    ),
]


@pytest.fixture(scope="session")
def samples() -> list[tuple[str, str]]:
    return SAMPLES


@pytest.fixture(scope="session")
def tokenizer():
    texts = [t for pair in SAMPLES for t in pair] * 20
    return train_tokenizer(texts, vocab_size=300)


def _factory(config_cls, model_cls, tokenizer):
    """A factory: make(seed, **overrides) -> a random-init model in eval mode."""

    def make(seed: int = 0, **overrides):
        return tiny_model(config_cls, model_cls, tokenizer, seed, **overrides)

    return make


@pytest.fixture
def tiny_llama(tokenizer):
    return _factory(LlamaConfig, LlamaForCausalLM, tokenizer)


@pytest.fixture
def tiny_qwen2(tokenizer):
    return _factory(Qwen2Config, Qwen2ForCausalLM, tokenizer)
