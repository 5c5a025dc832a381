"""Stage 1a: how strongly each input token steers a model's response loss.

The score of an instruction token i is ‖∂L/∂e_i‖₂, the gradient norm of the response loss L at its
input embedding; `grad_x_input` is |∂L/∂e_i · e_i| from the same backward pass, a second
attribution that detection can use instead (leafpipe.detect.score_variants). At response level, earlier
response tokens are scored by the loss of what follows them only: their own loss would mostly
measure how each predicts its right neighbour. Two ways to cut the response (`response_scopes`):
"segments" (the paper's): the response's reasoning steps are grouped into an earlier segment and a
continuation, cut at the step boundary nearest the middle of the response, and the earlier
segment is scored by the continuation's loss alone; "steps": a token of reasoning step k is scored
by the loss of every step after k, a different loss per step. Either way a token's `step` is its
scope index, and the last one is never scored.

Why it is fast: parameters are frozen and only the input embeddings require grad, so no parameter
gradient is ever allocated; samples are batched by a token budget over length-sorted buckets,
right-padded so that causal attention keeps them apart (a sample's scores do not depend on its
batch mates). On a GPU the first budget is what the model's activations leave room for in the free
memory (`token_budget`); a batch that runs out of memory is retried at half its size only once its
memory is free, and every later batch is planned within that smaller budget (`_scored`). Logits are
computed only at positions where a response token is predicted, so the vocabulary projection skips
the instruction, and the backward pass through the loss and the head is shared by all response
scopes of a batch: only the one through the decoder is per scope (`embedding_grad_norms`). On GPU
the model runs in bf16 with its default attention (SDPA where the architecture has it), and losses
and norms are taken in fp32. Inference mode has no place here: every activation of the forward pass
is needed for the input gradient.

Mean or sum loss: for the instruction they differ by a constant factor per sample (the number of
target tokens), which scales all its instruction gradients alike, so the min-max normalised
scores that detection uses are identical. With response scopes "steps", earlier reasoning steps
are each scored by a different loss (the steps after them), so there "sum" weighs early steps,
which have more tokens after them, more heavily than "mean" does.

Numerical faults: a sample whose response loss or input gradient is not finite (an inf weight, an
overflow in low precision) is left unscored, NaN on every token, and counted in the log; it never
yields scores. Its batch mates are unaffected: rows of a batch never mix in the model, and
non-finite losses are masked out of the summed loss before the backward pass, so each good
sample's gradient is the one it gets in a batch without the bad sample.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.distill.kd_loss import output_head
from leafpipe.execution import memory
from leafpipe.text.batching import collate
from leafpipe.text.reasoning_steps import reasoning_step_of, reasoning_step_starts
from leafpipe.text.templates import INSTRUCTION, RESPONSE, EncodedSample, encode_sample

log = logging.getLogger("leafpipe")

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
    steps: str = (
        "lines"  # how a response splits into reasoning steps (leafpipe.text.reasoning_steps)
    )
    response_level: bool = True  # also score earlier reasoning steps
    # "segments": earlier segment and continuation (the paper's); "steps": each step by all later steps
    response_scopes: str = "segments"

    def __post_init__(self) -> None:
        if self.response_scopes not in RESPONSE_SCOPES:
            raise ValueError(
                f"unknown response scopes {self.response_scopes!r}; choose one of {RESPONSE_SCOPES}"
            )


# The CPU's budget when none is set: on a CPU, batches beyond about a thousand tokens only add
# padding and cache misses (bench/score.py, docs/performance.md).
CPU_TOKEN_BUDGET = 1024


def token_budget(spec: ScoreSpec, model: PreTrainedModel, *, backward: bool = True) -> int:
    """Tokens (samples × longest sample) of the first batch: `spec.max_tokens` when set; on a GPU,
    as many as the model's activations leave room for in the memory free after its weights were
    loaded (`leafpipe.execution.memory`; `backward`: with the input-gradient backward pass of scoring); on
    a CPU, `CPU_TOKEN_BUDGET`. With a model spread over GPUs, the free memory is its first GPU's,
    and all of the activations are counted there (an upper bound)."""
    if spec.max_tokens:
        return spec.max_tokens
    param = next(model.parameters())
    if param.device.type != "cuda":
        return CPU_TOKEN_BUDGET
    free, _ = torch.cuda.mem_get_info(param.device)
    shape = memory.model_shape(model.config)
    return memory.token_budget(shape, free, param.element_size(), backward=backward)


@dataclass(frozen=True)
class _Item:
    """A sample ready for the model: its tokens and the reasoning step of each token (-1: none)."""

    enc: EncodedSample
    steps: list[int]

    @property
    def last_reasoning_step(self) -> int:
        return max(self.steps, default=-1)


def segment_starts(starts: Sequence[int], length: int) -> list[int]:
    """The paper's two response segments from the step starts of a response `length` characters
    long: [0, cut] with cut the step boundary nearest the middle (the earlier one on a tie), or [0]
    for a single step, which has no earlier segment. The official code takes the cut as given
    (a `####` marker, RUCBM/LeaF src/Confounding_token_detection/run_gradients_*_response_level.py);
    its rule is not published, and cutting at a step boundary never splits a reasoning step."""
    if len(starts) < 2:
        return [0]
    return [0, min(starts[1:], key=lambda s: abs(2 * s - length))]


def _prepare(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any], spec: ScoreSpec) -> _Item:
    enc = encode_sample(tokenizer, row["instruction"], row["response"])
    starts = reasoning_step_starts(row["response"], spec.steps)
    if spec.response_scopes == "segments":
        starts = segment_starts(starts, len(row["response"]))
    steps = [
        reasoning_step_of(starts, lo) if f == RESPONSE else -1
        for f, (lo, _) in zip(enc.fields, enc.offsets)
    ]
    # The end-of-turn token is trained with the response: it belongs to the last step.
    mask = enc.loss_mask()
    last = max(steps, default=-1)
    steps = [last if m and f != RESPONSE else s for s, m, f in zip(steps, mask, enc.fields)]
    return _Item(enc, steps)


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


def _loss_weights(mask: torch.Tensor, reduction: str) -> torch.Tensor:
    """The weight of each target's NLL in its sample's loss, fp32, from target masks [..., K]:
    the mask, divided by the number of targets for "mean"."""
    mask = mask.float()
    return mask / mask.sum(-1, keepdim=True).clamp_min(1.0) if reduction == "mean" else mask


# Why a sample is left unscored (`embedding_grad_norms`); 0: it is scored.
SCORED, NON_FINITE_LOSS, NON_FINITE_GRADIENT = 0, 1, 2
UNSCORED_REASONS = {NON_FINITE_LOSS: "non_finite_loss", NON_FINITE_GRADIENT: "non_finite_gradient"}

# Scopes whose input gradients share one backward pass through the decoder (`_input_grads`).
# Each one more adds a pass's activation gradients ([B, T, H] and [B, T, intermediate] of the
# layer being differentiated) to the peak, so a group is capped.
SCOPES_PER_BACKWARD = 8


def _attributions(grad: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """[2, B, T] fp32: ‖∂L/∂e_i‖₂ and |∂L/∂e_i · e_i| from the input-embedding gradient [B, T, H]."""
    g = grad.float()
    return torch.stack((g.norm(dim=-1), (g * embeds.detach().float()).sum(-1).abs()))


def _response_nll(
    model: PreTrainedModel, embeds: torch.Tensor, input_ids: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The final hidden states at the positions `keep` [K] ([B, K, H], attached to `embeds`
    [B, T, H]) and the NLL of the token each predicts ([B, K] fp32, on the head's device).

    The decoder and the head are called one after the other so that `keep` and the targets meet
    the hidden states on their device: with a model spread over GPUs, that is the last one. No
    attention mask: the batch is right-padded, so causal attention alone keeps every real token
    from seeing padding, and SDPA can take its causal path, which skips the masked half of the
    attention matrix (an explicit mask makes it compute all of it)."""
    hidden = model.get_decoder()(inputs_embeds=embeds, use_cache=False).last_hidden_state
    kept = hidden[:, keep.to(hidden.device)]
    logits = output_head(model)(kept)
    targets = input_ids[:, 1:][:, keep].to(logits.device)
    nll = torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), reduction="none"
    )
    return kept, nll.view_as(targets)


def _scopes(
    target_mask: torch.Tensor,
    target_steps: torch.Tensor,
    is_instr: torch.Tensor,
    steps: torch.Tensor,
    n_later: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What each scope's loss sums and what it scores: target masks [S, B, K] (from `target_mask`
    and `target_steps` [B, K]) and input positions [S, B, T] (from `is_instr`, `steps` [B, T]).
    Scope 0 is the whole response's loss at the instruction; then, for each step k < `n_later`
    that some sample continues after, the loss of the later steps at the tokens of step k."""
    masks, scored = [target_mask], [is_instr]
    for k in range(n_later):
        later = target_mask & (target_steps > k)
        has_later = later.any(-1)
        if bool(has_later.any()):
            masks.append(later)
            scored.append((steps == k) & has_later.to(steps.device)[:, None])
    return torch.stack(masks), torch.stack(scored)


def _input_grads(
    kept: torch.Tensor, embeds: torch.Tensor, seeds: torch.Tensor, retain: bool
) -> torch.Tensor:
    """∂⟨seeds[s], kept⟩/∂embeds for each s: [S, B, T, H] from seeds [S, B, K, H], in one backward
    pass through the decoder, batched over s (`is_grads_batched`: autograd under vmap)."""
    if len(seeds) == 1:
        return torch.autograd.grad(kept, embeds, seeds[0], retain_graph=retain)[0][None]
    return torch.autograd.grad(kept, embeds, seeds, retain_graph=retain, is_grads_batched=True)[0]


def _scope_scores(
    kept: torch.Tensor,
    nll: torch.Tensor,
    embeds: torch.Tensor,
    weights: torch.Tensor,
    scored: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each scope's attributions where it scores: [2, B, T] fp32 (NaN where no scope scores), and
    whether all of a sample's were finite [B]. A scope's loss is `weights` [S, B, K] times `nll`
    [B, K] (summed over B and K), its scores at `scored` [S, B, T]; `kept` [B, K, H] and `embeds`
    [B, T, H] are `_response_nll`'s."""
    # [B, K, H]; this pass frees the loss's and the head's part of the graph (the [B, K, V] logits).
    (per_target,) = torch.autograd.grad(nll.sum(), kept)
    scores = torch.full((2, *scored.shape[1:]), float("nan"), device=embeds.device)
    finite = torch.ones(scored.shape[1], dtype=torch.bool, device=embeds.device)
    for lo in range(0, len(weights), SCOPES_PER_BACKWARD):
        hi = min(lo + SCOPES_PER_BACKWARD, len(weights))
        seeds = weights[lo:hi, :, :, None].to(per_target.device, per_target.dtype) * per_target
        for at, grad in zip(
            scored[lo:hi], _input_grads(kept, embeds, seeds, retain=hi < len(weights))
        ):
            attributions = _attributions(grad, embeds)
            scores[:, at] = attributions[:, at]
            finite &= (torch.isfinite(attributions[0]) | ~at).all(-1)
    return scores, finite


def embedding_grad_norms(
    model: PreTrainedModel, items: Sequence[_Item], pad_id: int, spec: ScoreSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-token scores [2, B, T] (`grad_norm` and `grad_x_input`; fp32, NaN where unscored),
    per-sample response losses [B] and per-sample status [B] (int8: `SCORED`, `NON_FINITE_LOSS`
    or `NON_FINITE_GRADIENT`; the scores of an unscored sample are NaN throughout).

    One backward pass per scope would repeat the head's, the largest of the step; the head and
    the loss act on each position alone, so the NLL's gradient at the final hidden states,
    position by position, is computed once, and each scope's is that gradient weighted by the
    scope's loss weights. Only the pass through the decoder is per scope, in groups of
    `SCOPES_PER_BACKWARD`."""
    batch = collate([it.enc for it in items], pad_id)
    device = next(model.parameters()).device
    batch = batch.to(device)
    width = batch.input_ids.shape[1]
    steps = torch.full((len(items), width), -1, dtype=torch.long)
    for b, it in enumerate(items):
        steps[b, : len(it.steps)] = torch.tensor(it.steps)
    steps = steps.to(device)
    is_instr = torch.tensor(
        [
            [f == INSTRUCTION for f in it.enc.fields] + [False] * (width - len(it.enc))
            for it in items
        ],
        device=device,
    )

    # Logits only where some sample of the batch has a target: the vocabulary projection of the
    # instruction positions would be the largest tensor of the step, and is never used.
    keep = batch.target_mask.any(0).nonzero().squeeze(-1)
    embeds = model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
    kept, nll = _response_nll(model, embeds, batch.input_ids, keep)
    n_later = max(it.last_reasoning_step for it in items) if spec.response_level else 0
    masks, scored = _scopes(
        batch.target_mask[:, keep].to(nll.device),
        steps[:, 1:][:, keep].to(nll.device),
        is_instr,
        steps,
        n_later,
    )
    weights = _loss_weights(masks, spec.loss)  # [S, B, K]
    losses = (nll * weights).sum(-1)  # [S, B]
    finite = torch.isfinite(losses)
    # A non-finite loss gets gradient 0, not 1, so the backward pass never starts from it (its own
    # rows still come out NaN and are discarded).
    weights = torch.where(finite[..., None], weights, 0.0)
    loss_ok = (finite | ~masks.any(-1)).to(device)  # [S, B]: a scope without targets has no loss
    scores, finite_grad = _scope_scores(kept, nll, embeds, weights, scored)
    finite_grad &= loss_ok.all(0)
    finite_loss = finite[0].to(device)
    status = torch.where(
        finite_loss, torch.where(finite_grad, SCORED, NON_FINITE_GRADIENT), NON_FINITE_LOSS
    )
    scores[:, status != SCORED] = float("nan")
    return (
        scores.cpu().numpy(),
        losses[0].detach().float().cpu().numpy(),
        status.to(torch.int8).cpu().numpy(),
    )


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def _attempt(
    model: PreTrainedModel, items: Sequence[_Item], pad_id: int, spec: ScoreSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """`embedding_grad_norms` of a batch, or None if it ran out of memory and can be split (more
    than one sample); by then the failed attempt's memory is free."""
    try:
        return embedding_grad_norms(model, items, pad_id, spec)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _is_oom(err) or len(items) == 1:
            raise
    # Only out of the except block are the exception and its traceback gone, and with them the
    # frames that hold the failed attempt's activations.
    gc.collect()
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.empty_cache()
    return None


def _plan(
    indices: Sequence[int], lengths: Sequence[int], max_tokens: int, max_batch: int
) -> deque[list[int]]:
    """`token_budget_batches` of the samples `indices` (lengths indexed by sample)."""
    batches = token_budget_batches([lengths[i] for i in indices], max_tokens, max_batch)
    return deque([indices[j] for j in b] for b in batches)


def _scored(
    model: PreTrainedModel, items: Sequence[_Item], pad_id: int, spec: ScoreSpec, budget: int
) -> Iterator[tuple[int, np.ndarray, float, int]]:
    """Yield (index, scores [2, n], loss, status) per sample, batch by batch within a token
    `budget`. A batch that runs out of memory is not retried until its memory is free; then the
    budget becomes half that batch's tokens, and it and every later batch are planned anew within
    it, so no later batch runs out of memory first to find that out."""
    lengths = [len(it.enc) for it in items]
    plan = _plan(range(len(items)), lengths, budget, spec.max_batch)
    while plan:
        idx = plan.popleft()
        result = _attempt(model, [items[i] for i in idx], pad_id, spec)
        if result is None:
            longest = max(lengths[i] for i in idx)
            budget = len(idx) // 2 * longest
            log.warning(
                "out of memory on a batch of %d samples (%d tokens); token budget now %d",
                len(idx),
                len(idx) * longest,
                budget,
            )
            plan = _plan([i for b in (idx, *plan) for i in b], lengths, budget, spec.max_batch)
            continue
        scores, losses, status = result
        for b, i in enumerate(idx):
            yield i, scores[:, b, : len(items[i].enc)], float(losses[b]), int(status[b])


def _normalized(
    scores: np.ndarray, parts: np.ndarray, steps: np.ndarray, last_reasoning_step: int
) -> np.ndarray:
    """Min-max within the scopes detection compares: the instruction, and the earlier response
    scopes (steps or the earlier segment)."""
    out = np.full(scores.shape, np.nan)
    for scope in (parts == INSTRUCTION, (parts == RESPONSE) & (steps < last_reasoning_step)):
        values = scores[scope]
        finite = values[np.isfinite(values)]
        if finite.size and finite.max() > finite.min():
            out[scope] = (values - finite.min()) / (finite.max() - finite.min())
    return out


def _sample_frame(
    row: dict[str, Any], item: _Item, scores: np.ndarray, loss: float
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
    frame = pd.DataFrame(columns, columns=SCORE_COLUMNS)
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
