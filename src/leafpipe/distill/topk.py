"""The top-k path: a teacher distribution cached as its k largest log-probabilities per token.

Top-k teacher ("top-k teacher logits cached to disk"): `teacher_topk` keeps, for each trained
token, the k largest teacher log-probabilities at temperature tau (log-softmax over the FULL
vocabulary, then top-k) and their token ids. `kd_loss_sum(..., teacher_topk=cache)` then uses them
as `KDSpec.topk_mode` says. Neither mode is the full-vocabulary divergence the paper trains with;
both are approximations of it, and with k equal to the vocabulary size both equal it.

"renormalised" (the default): the teacher renormalised over its k tokens,
p~ = softmax(cached log-probs over the k):
- forward_kl: sum over the k tokens of p~ (log p~ - log q), q the student's FULL-vocabulary
  softmax (the student's mass outside the k tokens is pushed down through the normaliser of q);
- reverse_kl and jsd: the student is restricted to the same k tokens and renormalised,
  q~ = softmax(s over the k), and the divergence is the full-vocabulary formula applied to
  (p~, q~) over the k tokens; the gradient reaches only the k logits.

"tail": k + 1 categories, the k tokens and one bucket for everything else. The cached
log-probabilities are normalised over the full vocabulary, so the teacher's bucket holds
1 - sum(exp(cached)), known without storing more; the student's holds its own mass outside the
same k ids. The divergence is the full-vocabulary formula applied to these two (k + 1)-category
distributions. Merging categories never increases an f-divergence, so this forward KL is a lower
bound of the full one. Its gradient reaches every logit: a bucket's gradient spreads over the
tokens outside the k in proportion to the student's probabilities there (the bucket's logit is
their logsumexp). A bucket is log(1 - exp(logsumexp of the k)), computed as `log1mexp`; a
top-k mass within fp32's resolution of 1 leaves the bucket at that resolution (about 1.2e-7)
for both models alike, since a smaller remainder of a sum of fp32 values is rounding noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from leafpipe.distill.divergences import Target, forward_kl, jsd, reverse_kl
from leafpipe.distill.heads import (
    check_vocab,
    head_vocab,
    log_softmax_at,
    to_head_dtype,
    trained_rows,
)
from leafpipe.distill.spec import KDSpec


@dataclass
class TopK:
    """A cached teacher distribution: for each trained token, in target order (row-major order of
    the True entries of `target_mask`), the k largest teacher log-probabilities at temperature tau.

    Shapes: `indices` [N, k] int64 token ids; `logprobs` [N, k] fp32, log-softmax at `temperature`
    over the teacher's FULL (student-sized) vocabulary, then top-k, so they sum to less than 1.
    `temperature` (optional) is checked against `KDSpec.temperature` when the cache is used.
    """

    indices: torch.Tensor
    logprobs: torch.Tensor
    temperature: float | None = None

    def to(self, device: torch.device | str) -> "TopK":
        return TopK(self.indices.to(device), self.logprobs.to(device), self.temperature)


def check_topk(cache: TopK, rows: int, vocab: int, temperature: float) -> None:
    """That `cache` can stand in for the teacher of `rows` trained tokens of a student with `vocab`
    tokens, at `temperature`."""
    if cache.indices.shape != cache.logprobs.shape or cache.indices.dim() != 2:
        raise ValueError(
            f"TopK indices {tuple(cache.indices.shape)} and logprobs "
            f"{tuple(cache.logprobs.shape)} must both be [N, k]"
        )
    if cache.indices.shape[0] != rows:
        raise ValueError(
            f"TopK has {cache.indices.shape[0]} rows but target_mask has {rows} trained tokens"
        )
    if cache.temperature is not None and cache.temperature != temperature:
        raise ValueError(
            f"TopK was cached at temperature {cache.temperature}, spec has {temperature}"
        )
    if cache.indices.numel() and int(cache.indices.max()) >= vocab:
        raise ValueError(
            f"TopK holds token ids >= the student's vocabulary ({vocab}); cache it with "
            "teacher_topk(..., vocab_size=student vocabulary)"
        )


Divergence = Callable[[torch.Tensor, torch.Tensor, bool], tuple]

# The smallest top-k remainder a bucket can hold: fp32's resolution of a sum near 1.
_FLOOR = torch.finfo(torch.float32).eps


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for log-masses x <= 0, elementwise, with x clamped to at most
    -eps (fp32's resolution near 0), so a mass that rounds to 1 or above gives a finite log(eps).
    log(-expm1(x)) near 0 and log1p(-exp(x)) below -log 2, where each loses no precision
    (Maechler 2012)."""
    x = x.clamp(max=-_FLOOR)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def with_tail(log_k: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of k tokens [c, k], normalised over a larger vocabulary -> the k + 1
    categories [c, k + 1]: the k tokens, then the bucket of the mass outside them."""
    return torch.cat([log_k, log1mexp(torch.logsumexp(log_k, dim=-1, keepdim=True))], dim=-1)


def _divergence(spec: KDSpec) -> Divergence:
    """`spec.kind` as a function of (log_p, log_q, need_grad) over the same categories."""
    if spec.kind == "forward_kl":
        return forward_kl
    if spec.kind == "reverse_kl":
        return reverse_kl
    return lambda log_p, log_q, need_grad: jsd(log_p, log_q, spec.beta, need_grad)


def _restricted(
    divergence: Divergence,
    log_pk: torch.Tensor,
    log_q: torch.Tensor,
    idx: torch.Tensor,
    need_grad: bool,
):
    """A divergence between the teacher's and the student's distributions both renormalised over k
    tokens."""
    log_qk = torch.log_softmax(log_q.gather(1, idx), dim=-1)
    loss, grad_k = divergence(log_pk.clone(), log_qk, need_grad)
    if not need_grad:
        return loss, None
    return loss, log_q.zero_().scatter_(1, idx, grad_k)


def _tail_divergence(
    divergence: Divergence,
    log_p: torch.Tensor,
    log_q: torch.Tensor,
    idx: torch.Tensor,
    need_grad: bool,
):
    """A divergence between the teacher's k + 1 categories `log_p` [c, k + 1] and the student's
    (its full-vocabulary log-probs `log_q` [c, V] at the k ids `idx`, and the bucket of the rest).

    The gradient with respect to a token's logit is its category's: its own for the k tokens,
    the bucket's times q_v / Q_tail for the others (the bucket's logit is their logsumexp)."""
    log_buckets = with_tail(log_q.gather(1, idx))
    log_tail = log_buckets[:, -1:].clone()
    loss, grad_buckets = divergence(log_p.clone(), log_buckets, need_grad)
    if not need_grad:
        return loss, None
    grad = log_q.sub_(log_tail).exp_().mul_(grad_buckets[:, -1:])
    return loss, grad.scatter_(1, idx, grad_buckets[:, :-1])


class TopKTeacher(Target):
    def __init__(self, cache: TopK, spec: KDSpec) -> None:
        self.cache, self.spec = cache, spec
        self.divergence = _divergence(spec)

    def prepare(self, rows: slice, device: torch.device) -> Any:
        idx = self.cache.indices[rows].to(device, torch.long)
        log_pk = self.cache.logprobs[rows].to(device, torch.float32)
        if self.spec.topk_mode == "tail":
            return idx, with_tail(log_pk)
        return idx, torch.log_softmax(log_pk, dim=-1)  # renormalised over the k tokens

    def finish(self, state: Any, log_q: torch.Tensor, need_grad: bool):
        idx, log_p = state
        if self.spec.topk_mode == "tail":
            return _tail_divergence(self.divergence, log_p, log_q, idx, need_grad)
        if self.spec.kind == "forward_kl":
            pk = log_p.exp()
            loss = (pk * (log_p - log_q.gather(1, idx))).sum(-1)
            return loss, (log_q.exp_().scatter_add_(1, idx, -pk) if need_grad else None)
        return _restricted(self.divergence, log_p, log_q, idx, need_grad)


def teacher_topk(
    teacher_hidden: torch.Tensor,
    teacher_head: nn.Module,
    target_mask: torch.Tensor,
    k: int,
    temperature: float,
    chunk_tokens: int,
    *,
    vocab_size: int | None = None,
) -> TopK:
    """The teacher's top-k log-probabilities at `temperature` for each trained token, for caching.

    Shapes as in `kd_loss_sum`; returns `TopK` with [N, k] rows in the mask's row-major order. The
    log-softmax runs over the full vocabulary (truncated to `vocab_size`, the student's, when given
    and smaller than the teacher's; see the module docstring), so the cached values are true
    log-probabilities; `kd_loss_sum` uses them as `KDSpec.topk_mode` says.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be positive and finite, got {temperature}")
    if chunk_tokens < 0:
        raise ValueError(f"chunk_tokens must be >= 0, got {chunk_tokens}")
    rows = to_head_dtype(
        trained_rows(teacher_hidden.detach(), target_mask, "teacher_hidden"), teacher_head
    )
    teacher_vocab = head_vocab(teacher_head, rows)
    vocab = teacher_vocab if vocab_size is None else vocab_size
    check_vocab(teacher_vocab, vocab)
    if not 0 < k <= vocab:
        raise ValueError(f"k must lie in 1..{vocab}, got {k}")
    n = rows.shape[0]
    indices = torch.empty(n, k, dtype=torch.long, device=rows.device)
    logprobs = torch.empty(n, k, dtype=torch.float32, device=rows.device)
    stride = chunk_tokens or max(n, 1)
    with torch.no_grad():
        for start in range(0, n, stride):
            sl = slice(start, min(n, start + stride))
            values, ids = log_softmax_at(teacher_head(rows[sl]), vocab, temperature).topk(k, dim=-1)
            logprobs[sl], indices[sl] = values, ids
    return TopK(indices, logprobs, float(temperature))
