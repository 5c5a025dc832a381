"""Memory-lean token-level distillation losses, computed in chunks from final hidden states.

The full-logit path (`reference_loss.token_kl`) holds [B, T, V] logits of both models, their
log-softmaxes and the temporaries of the KL and of its backward: at V = 128256 and T = 2048 that is
about 1 GiB per fp32 tensor, several of them at once. Here only the trained positions are gathered
from the final hidden states, and the student's and teacher's LM heads are applied to `chunk_tokens`
of them at a time, so peak memory is O(chunk_tokens x V) instead of O(tokens x V).

How the student's gradient is obtained without keeping the chunk's logits for the backward pass:
for a plain `nn.Linear` head (Llama, Qwen2, Gemma, tied or not: a tied head is just an `nn.Linear`
whose weight is the embedding matrix, so it needs no special case) the gradient of every divergence
with respect to the logits has a closed form (below), so each chunk computes its loss *and* its
gradient at once and immediately contracts the latter with the head weight and the hidden states
(`grad_hidden = G W`, `grad_W += G^T h`). The backward pass then only scales those stored gradients
by the incoming gradient. The head's matmuls are the same three as with autograd (logits,
input gradient, weight gradient), so no work is repeated. Any other head module (a LoRA-wrapped or
quantised head) falls back to `torch.utils.checkpoint` per chunk: the same closed-form gradient,
but the chunk's student and teacher logits are recomputed in the backward pass (one extra head
forward for each model). The fused path reads `head.weight` directly and never calls the head's
`forward`, so forward hooks on the head (FSDP's unsharding, for one) do not run; wrap such a head
in any other module to take the checkpointed path.

The divergences and their gradients are in `leafpipe.distill.divergences`, the cached top-k
teacher in `leafpipe.distill.topk`, the heads, hidden states and vocabulary checks in
`leafpipe.distill.heads`.

The student head's three matrix products per chunk (logits, hidden-state gradient, weight
gradient) run in the dtype `KDSpec.head_precision` chooses. "fp32" keeps the head's own dtype:
fp32 for the trainer's fp32 master weights, since autocast covers only the decoder. "bf16" casts
the chunk's hidden states and the weight to bf16, the weight once per call (one [V, H] bf16 copy
lives through the loss; a cast per chunk would re-read the fp32 weight for every chunk, which on
a GPU takes about as long as a 512-token chunk's product). "auto" is bf16 when the head is on a
CUDA device, fp32 elsewhere. The bf16 logits are upcast to fp32 before the softmax. With bf16 (or
fp16) products, of a cast or of a bf16 head (a bf16 model, FSDP's bf16 compute copy), the
chunks' weight-gradient products are summed in an fp32 [V, H] buffer and cast to the weight's
dtype once at the end (extra memory: that buffer and one [V, H] product per chunk). So each
chunk's product is rounded to bf16 once, and the number of chunks adds no rounding, where a bf16
sum would round the running sum at every chunk. The fused path computes every chunk's gradient in
its forward pass anyway, so the buffer is all it takes; a custom autograd Function per chunk would
add a backward call per chunk for the same sums. Any other head (the checkpointed path) runs under
bf16 autocast instead, and autograd sums its chunks' weight gradients in the weight's dtype. The
teacher's head runs in the teacher's dtype (bf16 on a GPU: `distill` puts it so).

The fused path's loss can be backpropagated once (no `retain_graph`): its stored gradients are
handed over to autograd rather than copied, which is what keeps the [V, H] weight gradient from
existing twice.

Devices: a model spread over several GPUs (accelerate's `device_map`) returns its final hidden
states on its last GPU, while the batch's masks and ids stay where the caller put them, and its LM
head may sit on yet another GPU. Index and mask tensors are moved to the hidden states' device
where they meet; each chunk's logits are made on the head's device (the fused path moves the
chunk's hidden states there; a head called as a module has its own hooks), the teacher's side of a
chunk is moved to the student's logits, and the loss and the hidden states' gradient come back on
the student hidden states' device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from leafpipe.distill.divergences import FullTeacher, Labels, Target
from leafpipe.distill.heads import (
    bf16_products,
    check_vocab,
    head_vocab,
    linear_parts,
    to_head_dtype,
    trained_rows,
)
from leafpipe.distill.liger_loss import NEEDS_TEACHER, liger_kd_loss_sum
from leafpipe.distill.spec import KDSpec, check_head_precision
from leafpipe.distill.topk import TopK, TopKTeacher, check_topk

__all__ = ["KDSpec", "TopK", "ce_loss_sum", "kd_loss_sum"]

# --- one chunk from raw logits --------------------------------------------------------------------


def _chunk_from_logits(
    make_logits: Callable[[], torch.Tensor],
    cap: float | None,
    tau: float,
    target: Target,
    state: Any,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Raw student logits z [c, V] from `make_logits` -> (tau**2 * sum of the chunk's divergences,
    dLoss/dz [c, V] fp32 or None). The logits are made here, and overwritten, so that no caller
    holds a reference that would keep an extra [c, V] buffer alive."""
    z = make_logits().float()
    tanh = None
    if cap is not None:
        tanh = z.div_(cap).tanh_()
        s = tanh * (cap / tau)
    else:
        s = z.div_(tau) if tau != 1.0 else z
    log_q = torch.log_softmax(s, dim=-1)
    del s, z
    loss, grad = target.finish(state, log_q, need_grad)
    del log_q
    total = loss.sum() * tau**2
    if grad is None:
        return total, None
    # d(tau**2 * D)/dz = tau**2 * dD/ds * ds/dz, ds/dz = (1/tau) * (1 - tanh**2) with a soft-cap.
    if tau != 1.0:
        grad.mul_(tau)
    if tanh is not None:
        grad.mul_(tanh.square_().neg_().add_(1.0))
    return total, grad


class _FusedLinearLoss(torch.autograd.Function):
    """Chunked loss through a plain linear head; gradients computed in the forward pass, scaled in
    backward.

    The products run in `dtype` (`KDSpec.head_precision`) on the weight's device; the loss and the
    hidden states' gradient are returned on the hidden states' device."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, cap, tau, chunk, grads, dtype):
        need_h, need_w, need_b = grads
        n, width = hidden.shape
        vocab, device = weight.shape[0], weight.device
        w = weight.to(
            dtype
        )  # once for all chunks (module docstring); the weight itself when dtypes agree
        b = None if bias is None else bias.to(dtype)
        total = torch.zeros((), dtype=torch.float32, device=device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(vocab, width, dtype=torch.float32, device=device) if need_w else None
        grad_b = torch.zeros(vocab, dtype=torch.float32, device=device) if need_b else None
        need = need_h or need_w or need_b
        stride = chunk or max(n, 1)
        for start in range(0, n, stride):
            rows = slice(start, min(n, start + stride))
            state = target.prepare(rows, device)
            h = hidden[rows].to(device, dtype)
            loss, g = _chunk_from_logits(lambda: F.linear(h, w, b), cap, tau, target, state, need)
            del state
            total += loss
            if g is None:
                continue
            g = g.to(dtype)
            if need_h:
                grad_h[rows] = g @ w  # a copy into hidden's dtype and device
            if need_w:
                if dtype == torch.float32:
                    grad_w.addmm_(g.t(), h)
                else:
                    # bf16/fp16: sum the chunks' products in fp32 (one [V, H] product per chunk)
                    grad_w += g.t() @ h
            if need_b:
                grad_b += g.sum(0, dtype=torch.float32)
            del g
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        ctx.grads = (grad_h, grad_w, grad_b)
        return total.to(hidden.device)

    @staticmethod
    def backward(ctx, grad_out):
        grads = ctx.grads
        if grads is None:
            raise RuntimeError(
                "the chunked distillation loss can be backpropagated only once (no retain_graph)"
            )
        # Drop ctx's reference, so autograd can adopt the [V, H] weight gradient as `.grad` instead
        # of copying it (it only steals tensors that nothing else holds): a copy would double that
        # memory. For the same reason the scaling (the caller's division by its token count) is in
        # place.
        ctx.grads = None
        if not torch.equal(grad_out, torch.ones_like(grad_out)):
            for g in grads:
                if g is not None:
                    g.mul_(grad_out.to(g.device, g.dtype))
        return (*grads, None, None, None, None, None, None)


class _LogitsLoss(torch.autograd.Function):
    """Loss of one chunk from student logits that an arbitrary head produced (the checkpointed
    fallback).

    The gradient is saved with `save_for_backward`, so the enclosing non-reentrant checkpoint drops
    it after the forward pass and recomputes it (with the head call) in the backward pass."""

    @staticmethod
    def forward(ctx, logits, target, tau, rows, need_grad):
        state = target.prepare(rows, logits.device)
        loss, g = _chunk_from_logits(
            lambda: logits.detach().clone(), None, tau, target, state, need_grad
        )
        if g is not None:
            ctx.save_for_backward(g)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        (g,) = ctx.saved_tensors
        return g * grad_out, None, None, None, None


def _chunked_loss(
    hidden: torch.Tensor, head: nn.Module, target: Target, tau: float, chunk: int, precision: str
) -> torch.Tensor:
    """The loss of `target` over rows `hidden` [N, H] through `head`, `chunk` rows at a time; the
    head's products in bf16 or not by `precision` (`KDSpec.head_precision`)."""
    n = hidden.shape[0]
    parts = linear_parts(head)
    if parts is not None:
        weight, bias, cap = parts
        grad_on = torch.is_grad_enabled()
        grads = (
            grad_on and hidden.requires_grad,
            grad_on and weight.requires_grad,
            grad_on and bias is not None and bias.requires_grad,
        )
        dtype = torch.bfloat16 if bf16_products(precision, weight.device) else weight.dtype
        return _FusedLinearLoss.apply(hidden, weight, bias, target, cap, tau, chunk, grads, dtype)
    # Any other head: per chunk, a checkpointed head call; its logits are recomputed in backward.
    total = (
        hidden.new_zeros((), dtype=torch.float32) + hidden[:0].sum()
    )  # stays in the graph when N == 0
    stride = chunk or max(n, 1)
    bf16 = bf16_products(precision, hidden.device)
    for start in range(0, n, stride):
        rows = slice(start, min(n, start + stride))

        def piece(h: torch.Tensor, rows: slice = rows) -> torch.Tensor:
            with torch.autocast(h.device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = head(h)
            loss = _LogitsLoss.apply(
                logits, target, tau, rows, torch.is_grad_enabled() and logits.requires_grad
            )
            return loss.to(h.device)

        if torch.is_grad_enabled():
            total = total + checkpoint(piece, hidden[rows], use_reentrant=False)
        else:
            total = total + piece(hidden[rows])
    return total


# --- public API -----------------------------------------------------------------------------------


def kd_loss_sum(
    student_hidden: torch.Tensor,
    student_head: nn.Module,
    teacher_hidden: torch.Tensor | None,
    teacher_head: nn.Module | None,
    target_mask: torch.Tensor,
    spec: KDSpec,
    teacher_topk: TopK | None = None,
) -> torch.Tensor:
    """Sum over trained tokens of the per-token divergence `spec.kind` (times tau**2); fp32 scalar.

    Shapes: `student_hidden` [B, T, Hs], `teacher_hidden` [B, T, Ht] (final hidden states, e.g. from
    `response_hidden`), `target_mask` [B, T-1] bool: `hidden[:, t]` predicts token t + 1, and only
    positions where the mask is True are used (they are gathered first, so padding never matters).
    Heads map hidden states to logits (pass `output_head(model)`); the student's may be tied to its
    embeddings. Give the teacher either as (`teacher_hidden`, `teacher_head`) or as a cached
    `teacher_topk` (rows in the mask's row-major order), not both. The teacher side runs under
    `torch.no_grad` on detached hidden states. Peak memory is O(`spec.chunk_tokens` x V).
    The caller divides by the number of trained tokens (so normalisation spans micro-batches).
    `spec.backend` "liger" hands the same quantity to Liger-Kernel (`leafpipe.distill.liger_loss`).
    """
    student_rows = trained_rows(student_hidden, target_mask, "student_hidden")
    parts = linear_parts(student_head)
    vocab = parts[0].shape[0] if parts is not None else head_vocab(student_head, student_rows)
    if teacher_topk is not None:
        if teacher_hidden is not None or teacher_head is not None:
            raise ValueError(
                "give the teacher either as teacher_hidden and teacher_head or as teacher_topk, "
                "not both"
            )
        if spec.backend == "liger":
            raise ValueError(NEEDS_TEACHER)
        check_topk(teacher_topk, student_rows.shape[0], vocab, spec.temperature)
        target: Target = TopKTeacher(teacher_topk, spec)
    else:
        teacher_rows = _teacher_rows(
            student_hidden, teacher_hidden, teacher_head, target_mask, vocab
        )
        if spec.backend == "liger":
            return liger_kd_loss_sum(student_rows, student_head, teacher_rows, teacher_head, spec)
        target = FullTeacher(teacher_rows, teacher_head, vocab, spec)
    return _chunked_loss(
        student_rows, student_head, target, spec.temperature, spec.chunk_tokens, spec.head_precision
    )


def _teacher_rows(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor | None,
    teacher_head: nn.Module | None,
    target_mask: torch.Tensor,
    vocab: int,
) -> torch.Tensor:
    """The teacher's trained rows [N, Ht] for `kd_loss_sum`, checked against the student's;
    detached and in its head's dtype."""
    if teacher_hidden is None or teacher_head is None:
        raise ValueError("give the teacher as teacher_hidden and teacher_head, or as teacher_topk")
    if teacher_hidden.shape[:2] != student_hidden.shape[:2]:
        raise ValueError(
            f"teacher_hidden {tuple(teacher_hidden.shape)} and student_hidden "
            f"{tuple(student_hidden.shape)} differ in [B, T]"
        )
    teacher_rows = to_head_dtype(
        trained_rows(teacher_hidden.detach(), target_mask, "teacher_hidden"), teacher_head
    )
    check_vocab(head_vocab(teacher_head, teacher_rows), vocab)
    return teacher_rows


def ce_loss_sum(
    student_hidden: torch.Tensor,
    student_head: nn.Module,
    input_ids: torch.Tensor,
    target_mask: torch.Tensor,
    chunk_tokens: int,
    head_precision: str = "auto",
) -> torch.Tensor:
    """Sum of the cross-entropy of trained tokens (the `sft` variant); fp32 scalar, chunked like
    `kd_loss_sum`, the head's products in the dtype `head_precision` chooses
    (`KDSpec.head_precision`).

    Shapes: `student_hidden` [B, T, H], `input_ids` [B, T], `target_mask` [B, T-1]; `hidden[:, t]`
    predicts `input_ids[:, t + 1]`. Equals `F.cross_entropy(logits[:, :-1][mask], ids[:, 1:][mask],
    reduction="sum")` with the (soft-capped, if the head is) logits.
    """
    if chunk_tokens < 0:
        raise ValueError(f"chunk_tokens must be >= 0, got {chunk_tokens}")
    check_head_precision(head_precision)
    rows = trained_rows(student_hidden, target_mask, "student_hidden")
    if input_ids.shape != student_hidden.shape[:2]:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and student_hidden "
            f"{tuple(student_hidden.shape)} differ in [B, T]"
        )
    targets = input_ids[:, 1:][target_mask.bool()].long()
    return _chunked_loss(rows, student_head, Labels(targets), 1.0, chunk_tokens, head_precision)
