"""Tiny random-init models sized to a tokenizer: the `tiny_llama`/`tiny_qwen2` fixtures' models,
and the same saved with their tokenizer for the tests that run stages through folders (as the
workflow does) and load them as a teacher or a student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig


def tiny_config(config_cls, tokenizer, **overrides: Any):
    """A two-layer `config_cls` with a vocabulary and special ids of `tokenizer` (a pad id of None
    where the tokenizer has no pad token) and an untied head; `overrides` replace any setting."""
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    return config_cls(**(settings | overrides))


def tiny_model(config_cls, model_cls, tokenizer, seed: int, **overrides: Any):
    """A `model_cls` of `tiny_config`, its weights drawn after seeding with `seed`, in eval mode."""
    torch.manual_seed(seed)
    return model_cls(tiny_config(config_cls, tokenizer, **overrides)).eval()


def save_tiny_model(
    config_cls,
    model_cls,
    tokenizer,
    out_dir: Path,
    seed: int,
    generation: GenerationConfig | None = None,
    **overrides: Any,
) -> None:
    """`tiny_model` saved with `tokenizer` in `out_dir`; `generation` replaces the
    generation_config.json that save_pretrained derives from the model's config, as a model
    repository's own does."""
    model = tiny_model(config_cls, model_cls, tokenizer, seed, **overrides)
    if generation is not None:
        model.generation_config = generation
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
