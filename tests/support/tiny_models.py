"""Tiny random-init models saved with their tokenizer: what the tests that run stages through
folders (as the workflow does) load as a teacher or a student."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_model(config_cls, model_cls, tokenizer, out_dir: Path, seed: int) -> None:
    """A two-layer model of `config_cls`/`model_cls` sized to `tokenizer` (drawn after seeding
    with `seed`), saved with the tokenizer in `out_dir`. Its pad id is the tokenizer's, None
    where the tokenizer has no pad token."""
    torch.manual_seed(seed)
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model_cls(config).eval().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
