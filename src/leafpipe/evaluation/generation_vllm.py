"""Generation with vLLM, for GPU runs of real models: the same prompts, settings and records as
`leafpipe.evaluation.generation.generate`, from vLLM's continuous batching.

Used by the generate stage when `evaluation.backend` is `vllm`, or `auto` with vLLM installed and
a GPU visible. Prompts are the same chat-template token ids (`templates.encode_prompt`), passed
to vLLM as token ids so both backends complete exactly the same input, and completions stop at
the same end-of-turn tokens (`generation.end_of_turn_ids`). The engine runs tensor-parallel over
the job's GPUs, as many as divide the model's attention heads
(`leafpipe.execution.tensor_parallel`). vLLM is imported only here and only when used: the
pipeline neither needs nor installs it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from leafpipe.evaluation.generation import (
    SamplingSpec,
    completion_record,
    end_of_turn_ids,
    generation_info,
    saved_generation_config,
)
from leafpipe.evaluation.protocols import prompt_parts
from leafpipe.execution.model_shapes import hub_shape
from leafpipe.execution.tensor_parallel import tensor_parallel_size
from leafpipe.text.templates import encode_prompt

log = logging.getLogger(__name__)
# The weights' dtype: the config has no dtype setting, and every GPU stage runs in bf16.
DTYPE = "bfloat16"


def vllm_usable() -> bool:
    """vLLM is installed and a GPU is visible."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@dataclass(frozen=True)
class VllmSetup:
    """What vLLM's engine is started with, chosen before it starts so that the generate stage can
    record it (`info`)."""

    tensor_parallel_size: int
    stop_token_ids: tuple[int, ...]
    dtype: str = DTYPE

    def info(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str]) -> dict[str, Any]:
        """The generations' info (`generation.generation_info`) with stop strings `stop`."""
        return generation_info(
            "vllm",
            tokenizer,
            self.dtype,
            self.stop_token_ids,
            stop,
            tensor_parallel_size=self.tensor_parallel_size,
        )


def vllm_setup(
    model_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    *,
    revision: str | None = None,
    gpus: int | None = None,
) -> VllmSetup:
    """The engine's settings for a model folder (or hub id at `revision`), from its config files
    alone: no weights are read.

    Args:
        gpus: the job's GPUs; default: all this process sees, which are the job's own
            (`leafpipe.execution.devices` set `CUDA_VISIBLE_DEVICES` to its claim).
    """
    gpus = torch.cuda.device_count() if gpus is None else gpus
    eos = end_of_turn_ids(tokenizer, saved_generation_config(model_dir, revision))
    return VllmSetup(_tensor_parallel(model_dir, revision, gpus), eos)


def _tensor_parallel(model_dir: str | Path, revision: str | None, gpus: int) -> int:
    """All `gpus`, or the most of them that divide the model's attention heads, with a warning
    naming the GPUs left idle."""
    shape = hub_shape(str(model_dir), revision)
    if shape is None:
        log.warning("%s: attention heads unknown; vLLM runs on all %d GPU(s)", model_dir, gpus)
        return gpus
    size = tensor_parallel_size(gpus, shape.heads, shape.kv_heads)
    if size < gpus:
        log.warning(
            "%s has %d attention heads, which %d GPUs do not divide: vLLM runs tensor-parallel "
            "over %d and %d of the job's GPUs go unused (give generate a GPU count that divides "
            "%d: evaluation.gpus or resources)",
            model_dir,
            shape.heads,
            gpus,
            size,
            gpus - size,
            shape.heads,
        )
    return size


def generate_vllm(
    model_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    *,
    setup: VllmSetup,
    max_new_tokens: int,
    sampling: SamplingSpec = SamplingSpec(),
    gpu_memory_utilization: float = 0.9,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> list[dict[str, Any]]:
    """`sampling.n` records per row, in input order, with `generate`'s fields; `revision` is a
    hub id's pinned revision, of its weights and its tokenizer; `setup` is `vllm_setup`'s.

    vLLM cuts a completion before a stop string and stops at `setup.stop_token_ids`; its finish
    reason "stop" or "length" becomes the record's.
    """
    from vllm import LLM, SamplingParams

    prompts = [encode_prompt(tokenizer, row["instruction"], **prompt_parts(row)) for row in rows]
    llm = LLM(
        model=str(model_dir),
        tokenizer=str(model_dir),
        dtype=setup.dtype,
        tensor_parallel_size=setup.tensor_parallel_size,
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
        stop_token_ids=list(setup.stop_token_ids),
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
