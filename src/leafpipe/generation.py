"""Batched greedy generation for evaluation.

Prompts are encoded with the same chat template used for training and scoring
(`templates.encode_prompt`), left-padded so every row's next token sits in the last column,
and batched in order of prompt length so little compute goes to padding. Greedy decoding makes
the result independent of batching, which the tests check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.templates import encode_prompt


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` intra-op threads inside the block (a Snakemake rule's share), then restore."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _left_pad(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad on the left by hand, so the caller's tokenizer (its padding side) is never touched."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    *,
    max_new_tokens: int,
    batch_size: int,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Greedily complete each row's `instruction`; return one record per row, in input order.

    Generation stops at the tokenizer's end-of-turn token (its eos, `<|im_end|>` for ChatML);
    `finish_reason` is `stop` when that token was produced and `length` when `max_new_tokens`
    ran out first, so truncated answers can be told apart from wrong ones.
    """
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no eos token: generation would never stop")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    prompts = [encode_prompt(tokenizer, row["instruction"]) for row in rows]
    # Longest first: a batch too big for memory fails in the first minute, not the last.
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]), reverse=True)
    results: dict[int, dict[str, Any]] = {}
    device = model.device
    with _torch_threads(threads), torch.inference_mode(), tqdm(
        total=len(rows), desc="generate", unit="prompt"
    ) as bar:
        for lo in range(0, len(order), batch_size):
            chunk = order[lo : lo + batch_size]
            ids, mask = _left_pad([prompts[i] for i in chunk], pad_id)
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=eos_id,
            )
            new_tokens = out[:, ids.shape[1] :].tolist()
            for i, tokens in zip(chunk, new_tokens):
                results[i] = _record(rows[i], prompts[i], tokens, tokenizer, eos_id)
            bar.update(len(chunk))
    return [results[i] for i in range(len(rows))]


def _record(
    row: Mapping[str, Any],
    prompt: list[int],
    tokens: list[int],
    tokenizer: PreTrainedTokenizerBase,
    eos_id: int,
) -> dict[str, Any]:
    """Cut a row at its first eos; what follows is padding for rows that finished early."""
    stopped = eos_id in tokens
    kept = tokens[: tokens.index(eos_id) + 1] if stopped else tokens
    return {
        "id": row["id"],
        "prompt": row["instruction"],
        "completion": tokenizer.decode(kept, skip_special_tokens=True),
        "finish_reason": "stop" if stopped else "length",
        "prompt_tokens": len(prompt),
        "completion_tokens": len(kept),
        "reference": row["answer"],
    }
