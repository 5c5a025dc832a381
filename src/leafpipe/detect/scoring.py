"""Stage 1a: how strongly each input token steers a model's response loss.

The score of an instruction token i is ‖∂L/∂e_i‖₂, the gradient norm of the response loss L at
its input embedding; `grad_x_input` is |∂L/∂e_i · e_i| from the same backward pass, a second
attribution that detection can use instead (leafpipe.detect.score_variants). At response level,
earlier response tokens are scored by the loss of what follows them only: their own loss would
mostly measure how each predicts its right neighbour. Two ways to cut the response
(`response_scopes`): "segments" (the paper's): the response's reasoning steps are grouped into an
earlier segment and a continuation, cut at the reasoning-step boundary nearest the middle of the
response, and the earlier segment is scored by the continuation's loss alone; "steps": a token of
reasoning step k is scored by the loss of every reasoning step after k, a different loss per
reasoning step. Either way a token's `step` is its scope index, and the last one is never scored.

Why it is fast: parameters are frozen and only the input embeddings require grad, so no parameter
gradient is ever allocated; samples are batched by a token budget over length-sorted buckets
(leafpipe.detect.score_batches, which also retries a batch that runs out of memory); the
vocabulary projection and the backward pass through the head are shared by all response scopes of
a batch (leafpipe.detect.input_gradients, which also says how mean and sum losses differ and what
becomes of a sample whose loss or gradient is not finite). On GPU the model runs in bf16 with its
default attention (SDPA where the architecture has it), and losses and norms are taken in fp32.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.detect.input_gradients import (
    SCORED,
    UNSCORED_REASONS,
    PreparedSample,
    embedding_grad_norms,
)
from leafpipe.detect.score_batches import CPU_TOKEN_BUDGET as CPU_TOKEN_BUDGET
from leafpipe.detect.score_batches import budgeted_batches, token_budget
from leafpipe.detect.score_batches import token_budget_batches as token_budget_batches
from leafpipe.text.reasoning_steps import reasoning_step_of, reasoning_step_starts
from leafpipe.text.templates import INSTRUCTION, RESPONSE, encode_sample

log = logging.getLogger("leafpipe")

# CPU_TOKEN_BUDGET and token_budget_batches are re-exported (`as`): the attention analysis and the
# validity check batch by scoring's budget and import them from here.

SCORE_COLUMNS = [
    "sample_id",
    "part",
    "step",
    "position",
    "token_id",
    "token",
    "char_start",
    "char_end",
    "grad_norm",
    "grad_norm_normalized",
    "grad_x_input",
    "loss",
]
RESPONSE_SCOPES = ("segments", "steps")


@dataclass(frozen=True)
class ScoreSpec:
    # Token budget of a batch (samples × longest sample, padding included); None: by device.
    max_tokens: int | None = None
    max_batch: int = 64
    loss: str = "mean"  # "mean" or "sum" over target tokens
    # How a response splits into reasoning steps (leafpipe.text.reasoning_steps).
    steps: str = "lines"
    response_level: bool = True  # also score earlier reasoning steps
    # "segments": earlier segment and continuation (the paper's); "steps": each reasoning step by
    # all later reasoning steps.
    response_scopes: str = "segments"

    def __post_init__(self) -> None:
        if self.response_scopes not in RESPONSE_SCOPES:
            raise ValueError(
                f"unknown response scopes {self.response_scopes!r}; choose one of {RESPONSE_SCOPES}"
            )


def segment_starts(starts: Sequence[int], length: int) -> list[int]:
    """The paper's two response segments from the reasoning-step starts of a response `length`
    characters long: [0, cut] with cut the reasoning-step boundary nearest the middle (the earlier
    one on a tie), or [0] for a single reasoning step, which has no earlier segment. The official
    code takes the cut as given (a `####` marker, RUCBM/LeaF
    src/Confounding_token_detection/run_gradients_*_response_level.py); its rule is not
    published, and cutting at a reasoning-step boundary never splits a reasoning step."""
    if len(starts) < 2:
        return [0]
    return [0, min(starts[1:], key=lambda s: abs(2 * s - length))]


def _prepare(
    tokenizer: PreTrainedTokenizerBase, row: dict[str, Any], spec: ScoreSpec
) -> PreparedSample:
    # A system prompt is template text: rendered, never scored.
    enc = encode_sample(tokenizer, row["instruction"], row["response"], system=row.get("system"))
    starts = reasoning_step_starts(row["response"], spec.steps)
    if spec.response_scopes == "segments":
        starts = segment_starts(starts, len(row["response"]))
    steps = [
        reasoning_step_of(starts, lo) if f == RESPONSE else -1
        for f, (lo, _) in zip(enc.fields, enc.offsets)
    ]
    # `steps`: each token's response scope (reasoning step or segment; -1: none). The end-of-turn
    # token is trained with the response: it belongs to the last scope.
    mask = enc.loss_mask()
    last = max(steps, default=-1)
    steps = [last if m and f != RESPONSE else s for s, m, f in zip(steps, mask, enc.fields)]
    return PreparedSample(enc, steps)


def _scored(
    model: PreTrainedModel,
    items: Sequence[PreparedSample],
    pad_id: int,
    spec: ScoreSpec,
    budget: int,
) -> Iterator[tuple[int, np.ndarray, float, int]]:
    """Yield (index, scores [2, n], loss, status) per sample, batch by batch within a token
    `budget` (leafpipe.detect.score_batches.budgeted_batches). `embedding_grad_norms` is looked
    up here at each batch, so that tests and benchmarks can stand in for it."""

    def run(idx: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return embedding_grad_norms(model, [items[i] for i in idx], pad_id, spec)

    on_cuda = next(model.parameters()).device.type == "cuda"
    lengths = [len(it.enc) for it in items]
    for idx, (scores, losses, status) in budgeted_batches(
        run, lengths, budget, spec.max_batch, on_cuda
    ):
        for b, i in enumerate(idx):
            yield i, scores[:, b, : len(items[i].enc)], float(losses[b]), int(status[b])


def _normalized(
    scores: np.ndarray, parts: np.ndarray, steps: np.ndarray, last_reasoning_step: int
) -> np.ndarray:
    """Min-max within the scopes detection compares: the instruction, and the earlier response
    scopes (reasoning steps or the earlier segment)."""
    out = np.full(scores.shape, np.nan)
    for scope in (parts == INSTRUCTION, (parts == RESPONSE) & (steps < last_reasoning_step)):
        values = scores[scope]
        finite = values[np.isfinite(values)]
        if finite.size and finite.max() > finite.min():
            out[scope] = (values - finite.min()) / (finite.max() - finite.min())
    return out


def _sample_frame(
    row: dict[str, Any], item: PreparedSample, scores: np.ndarray, loss: float
) -> dict[str, Any]:
    """One sample's output rows from its [2, T] scores (`grad_norm`, `grad_x_input`)."""
    keep = np.array([f in (INSTRUCTION, RESPONSE) for f in item.enc.fields])
    pos = np.flatnonzero(keep)
    parts = np.array(item.enc.fields, dtype=object)[pos]
    steps = np.array(item.steps)[pos]
    starts = np.array([item.enc.offsets[p][0] for p in pos])
    ends = np.array([item.enc.offsets[p][1] for p in pos])
    ids = np.array(item.enc.input_ids)[pos]
    texts = [row[part][a:b] for part, a, b in zip(parts, starts, ends)]
    return {
        "sample_id": [str(row["id"])] * len(pos),
        "part": parts.tolist(),
        "step": steps.tolist(),
        "position": pos.tolist(),
        "token_id": ids.tolist(),
        "token": texts,
        "char_start": starts.tolist(),
        "char_end": ends.tolist(),
        "grad_norm": scores[0, pos].tolist(),
        "grad_norm_normalized": _normalized(
            scores[0, pos], parts, steps, item.last_reasoning_step
        ).tolist(),
        "grad_x_input": scores[1, pos].tolist(),
        "loss": [loss] * len(pos),
    }


def score_samples(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict[str, Any]],
    spec: ScoreSpec = ScoreSpec(),
) -> pd.DataFrame:
    """Score every content token of every row: one output row per token, in input order
    (schema: docs/data-schemas.md)."""
    model.eval()
    model.requires_grad_(False)
    items = [_prepare(tokenizer, r, spec) for r in rows]
    # Llama-3 tokenizers have no pad token. Any id will do, as in distillation and attention:
    # padding sits right of every real token, so causal attention never reads it.
    pad_id = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    per_sample: dict[int, tuple[np.ndarray, float]] = {}
    unscored: dict[int, list[str]] = {code: [] for code in UNSCORED_REASONS}
    with tqdm(total=len(rows), desc="score", unit="sample", file=sys.stderr) as bar:
        for i, scores, loss, status in _scored(
            model, items, pad_id, spec, token_budget(spec, model)
        ):
            per_sample[i] = (scores, loss)
            if status != SCORED:
                unscored[status].append(str(rows[i]["id"]))
            bar.update()
    n_unscored = sum(len(ids) for ids in unscored.values())
    if n_unscored:
        log.warning(
            "scoring: %d of %d samples left unscored (grad_norm NaN on all their tokens): %s",
            n_unscored,
            len(rows),
            "; ".join(
                f"{len(ids)} with a {UNSCORED_REASONS[code].replace('non_finite_', 'non-finite ')} "
                f"(e.g. {', '.join(ids[:3])})"
                for code, ids in unscored.items()
                if ids
            ),
        )
    parts = [_sample_frame(rows[i], items[i], *per_sample[i]) for i in range(len(rows))]
    columns = {c: [v for p in parts for v in p[c]] for c in SCORE_COLUMNS}
    frame = pd.DataFrame(columns)  # its keys: SCORE_COLUMNS, in order
    return frame.astype(
        {
            "step": "int32",
            "position": "int32",
            "token_id": "int64",
            "char_start": "int32",
            "char_end": "int32",
            "grad_norm": "float32",
            "grad_norm_normalized": "float32",
            "grad_x_input": "float32",
            "loss": "float32",
        }
    )
