"""Scoring's gradient computation: per-token attributions of a batch from one forward pass.

Logits are computed only at positions where a response token is predicted, so the vocabulary
projection skips the instruction, and the backward pass through the loss and the head is shared
by all response scopes of a batch: only the one through the decoder is per scope
(`embedding_grad_norms`). Losses and norms are taken in fp32. Inference mode has no place here:
every activation of the forward pass is needed for the input gradient.

Mean or sum loss: for the instruction they differ by a constant factor per sample (the number of
target tokens), which scales all its instruction gradients alike, so the min-max normalised
scores that detection uses are identical. With response scopes "steps", earlier reasoning steps
are each scored by a different loss (the reasoning steps after them), so there "sum" weighs early
reasoning steps, which have more tokens after them, more heavily than "mean" does.

Numerical faults: a sample whose response loss or input gradient is not finite (an inf weight, an
overflow in low precision) is left unscored, NaN on every token, and counted in the log; it never
yields scores. Its batch mates are unaffected: rows of a batch never mix in the model, and
non-finite losses are masked out of the summed loss before the backward pass, so each good
sample's gradient is the one it gets in a batch without the bad sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedModel

from leafpipe.distill.heads import output_head
from leafpipe.text.batching import Batch, collate
from leafpipe.text.templates import INSTRUCTION, EncodedSample

if TYPE_CHECKING:
    from leafpipe.detect.scoring import ScoreSpec


@dataclass(frozen=True)
class PreparedSample:
    """A sample ready for the model: its tokens and the response scope of each token (-1: none),
    the reasoning step or segment that the `step` column records."""

    enc: EncodedSample
    steps: list[int]

    @property
    def last_reasoning_step(self) -> int:
        return max(self.steps, default=-1)


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
    """[2, B, T] fp32: ‖∂L/∂e_i‖₂ and |∂L/∂e_i · e_i| from the input-embedding gradient
    [B, T, H]."""
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
    `steps` are each token's response scope (reasoning step or segment, the `step` column). Scope
    0 is the whole response's loss at the instruction; then, for each response scope k <
    `n_later` that some sample continues after, the loss of the later scopes at the tokens of
    scope k."""
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


def prepared_batch(
    items: Sequence[PreparedSample], pad_id: int, device: torch.device
) -> tuple[Batch, torch.Tensor, torch.Tensor]:
    """The items collated on `device`, with each token's response scope [B, T] (int64; -1: none,
    and on padding) and whether it is an instruction token [B, T] (bool)."""
    batch = collate([it.enc for it in items], pad_id).to(device)
    width = batch.input_ids.shape[1]
    steps = torch.full((len(items), width), -1, dtype=torch.long)
    for b, it in enumerate(items):
        steps[b, : len(it.steps)] = torch.tensor(it.steps)
    is_instr = torch.tensor(
        [
            [f == INSTRUCTION for f in it.enc.fields] + [False] * (width - len(it.enc))
            for it in items
        ],
        device=device,
    )
    return batch, steps.to(device), is_instr


def embedding_grad_norms(
    model: PreTrainedModel, items: Sequence[PreparedSample], pad_id: int, spec: ScoreSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-token scores [2, B, T] (`grad_norm` and `grad_x_input`; fp32, NaN where unscored),
    per-sample response losses [B] and per-sample status [B] (int8: `SCORED`, `NON_FINITE_LOSS`
    or `NON_FINITE_GRADIENT`; the scores of an unscored sample are NaN throughout).

    One backward pass per scope would repeat the head's, the largest of the pass; the head and
    the loss act on each position alone, so the NLL's gradient at the final hidden states,
    position by position, is computed once, and each scope's is that gradient weighted by the
    scope's loss weights. Only the pass through the decoder is per scope, in groups of
    `SCOPES_PER_BACKWARD`."""
    device = next(model.parameters()).device
    batch, steps, is_instr = prepared_batch(items, pad_id, device)

    # Logits only where some sample of the batch has a target: the vocabulary projection of the
    # instruction positions would be the largest tensor of the pass, and is never used.
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
