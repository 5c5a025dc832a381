"""Generation with vLLM, for GPU runs of real models: the same prompts, settings and records as
`leafpipe.evaluation.generation.generate`, from vLLM's continuous batching.

Used by the generate stage when `evaluation.backend` is `vllm`, or `auto` with vLLM installed and
a GPU visible. Prompts are the same chat-template token ids (`templates.encode_prompt`), passed
to vLLM as token ids so both backends complete exactly the same input. vLLM is imported only
here and only when used: the pipeline neither needs nor installs it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from leafpipe.evaluation.generation import SamplingSpec, completion_record
from leafpipe.evaluation.protocols import prompt_parts
from leafpipe.text.templates import encode_prompt


def vllm_usable() -> bool:
    """vLLM is installed and a GPU is visible."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def generate_vllm(
    model_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    *,
    max_new_tokens: int,
    sampling: SamplingSpec = SamplingSpec(),
    gpu_memory_utilization: float = 0.9,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> list[dict[str, Any]]:
    """`sampling.n` records per row, in input order, with `generate`'s fields; `revision` is a
    hub id's pinned revision, of its weights and its tokenizer.

    vLLM cuts a completion before a stop string and stops at the model's end-of-turn token;
    its finish reason "stop" or "length" becomes the record's.
    """
    from vllm import LLM, SamplingParams

    prompts = [encode_prompt(tokenizer, row["instruction"], **prompt_parts(row)) for row in rows]
    llm = LLM(
        model=str(model_dir),
        tokenizer=str(model_dir),
        dtype="bfloat16",
        seed=sampling.seed,
        gpu_memory_utilization=gpu_memory_utilization,
        trust_remote_code=trust_remote_code,
        revision=revision,
        tokenizer_revision=revision,
    )
    params = SamplingParams(
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=max_new_tokens,
        stop=list(sampling.stop) or None,
        seed=sampling.seed,
    )
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=True)
    records = []
    for row, prompt, output in zip(rows, prompts, outputs):
        if len(output.outputs) != sampling.n:
            raise RuntimeError(
                f"vLLM returned {len(output.outputs)} completions for {row['id']!r}, "
                f"expected {sampling.n}"
            )
        records += [
            completion_record(
                row,
                sample,
                c.text,
                "length" if c.finish_reason == "length" else "stop",
                len(prompt),
                len(c.token_ids),
            )
            for sample, c in enumerate(output.outputs)
        ]
    return records
