"""The settings `build_teacher_cache` takes, for the tests that build a teacher cache."""

from __future__ import annotations

from typing import Any


def cache_settings(
    tokenizer: Any,
    k: int = 5,
    temperature: float = 2.0,
    batch_size: int = 3,
    chunk_tokens: int = 16,
) -> dict[str, Any]:
    """`build_teacher_cache`'s keyword arguments for a teacher and student that share `tokenizer`
    (its vocabulary, its pad id); small batches and chunks, so that a few samples make several."""
    return dict(
        k=k,
        temperature=temperature,
        vocab_size=len(tokenizer),
        pad_id=tokenizer.pad_token_id,
        batch_size=batch_size,
        chunk_tokens=chunk_tokens,
    )
