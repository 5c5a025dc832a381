"""Scoring's batches: a token budget over length-sorted buckets, and a retry on out of memory.

Samples are right-padded so that causal attention keeps them apart (a sample's scores do not
depend on its batch mates), which lets them be grouped by length alone. On a GPU the first budget
is what the model's activations leave room for in the free memory (`token_budget`); a batch that
runs out of memory is retried at half its size only once its memory is free, and every later batch
is planned within that smaller budget (`budgeted_batches`).
"""

from __future__ import annotations

import gc
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import torch
from transformers import PreTrainedModel

from leafpipe.execution import memory

if TYPE_CHECKING:
    from leafpipe.detect.scoring import ScoreSpec

log = logging.getLogger("leafpipe")

Result = TypeVar("Result")

# The CPU's budget when none is set: on a CPU, batches beyond about a thousand tokens only add
# padding and cache misses (bench/score.py, docs/performance.md).
CPU_TOKEN_BUDGET = 1024


def token_budget(spec: ScoreSpec, model: PreTrainedModel, *, backward: bool = True) -> int:
    """Tokens (samples × longest sample) of the first batch: `spec.max_tokens` when set; on a GPU,
    as many as the model's activations leave room for in the memory free after its weights were
    loaded (`leafpipe.execution.memory`; `backward`: with the input-gradient backward pass of
    scoring); on a CPU, `CPU_TOKEN_BUDGET`. With a model spread over GPUs, the free memory is its
    first GPU's, and all of the activations are counted there (an upper bound)."""
    if spec.max_tokens:
        return spec.max_tokens
    param = next(model.parameters())
    if param.device.type != "cuda":
        return CPU_TOKEN_BUDGET
    free, _ = torch.cuda.mem_get_info(param.device)
    shape = memory.model_shape(model.config)
    return memory.token_budget(shape, free, param.element_size(), backward=backward)


def token_budget_batches(
    lengths: Sequence[int], max_tokens: int, max_batch: int
) -> list[list[int]]:
    """Indices grouped longest first so that samples × longest length stays within the budget.

    A sample longer than the budget gets a batch of its own rather than being dropped.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if (
            batches
            and len(batches[-1]) < max_batch
            and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens
        ):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _attempt(run: Callable[[list[int]], Result], idx: list[int], on_cuda: bool) -> Result | None:
    """`run` on a batch, or None if it ran out of memory and can be split (more than one
    sample); by then the failed attempt's memory is free."""
    try:
        return run(idx)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _is_oom(err) or len(idx) == 1:
            raise
    # Only out of the except block are the exception and its traceback gone, and with them the
    # frames that hold the failed attempt's activations.
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
    return None


def _plan(
    indices: Sequence[int], lengths: Sequence[int], max_tokens: int, max_batch: int
) -> deque[list[int]]:
    """`token_budget_batches` of the samples `indices` (lengths indexed by sample)."""
    batches = token_budget_batches([lengths[i] for i in indices], max_tokens, max_batch)
    return deque([indices[j] for j in b] for b in batches)


def budgeted_batches(
    run: Callable[[list[int]], Result],
    lengths: Sequence[int],
    budget: int,
    max_batch: int,
    on_cuda: bool,
) -> Iterator[tuple[list[int], Result]]:
    """Yield (sample indices, `run` of them) batch by batch within a token `budget`. A batch that
    runs out of memory is not retried until its memory is free; then the budget becomes half that
    batch's tokens, and it and every later batch are planned anew within it, so no later batch
    runs out of memory first to find that out. `on_cuda`: the samples run on a GPU, whose cache
    is emptied after a failed attempt."""
    plan = _plan(range(len(lengths)), lengths, budget, max_batch)
    while plan:
        idx = plan.popleft()
        result = _attempt(run, idx, on_cuda)
        if result is None:
            longest = max(lengths[i] for i in idx)
            budget = len(idx) // 2 * longest
            log.warning(
                "out of memory on a batch of %d samples (%d tokens); token budget now %d",
                len(idx),
                len(idx) * longest,
                budget,
            )
            plan = _plan([i for b in (idx, *plan) for i in b], lengths, budget, max_batch)
            continue
        yield idx, result
