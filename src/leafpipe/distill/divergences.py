"""The divergences of one chunk: per trained token, the loss and its gradient with respect to
the student's tempered logits, in closed form (`leafpipe.distill.kd_loss` contracts that
gradient with the head).

Divergences, per trained token, with p = p_T and q = p_S the teacher's and student's next-token
distributions at temperature tau (softmax of logits / tau), s the student's logits / tau, and the
result multiplied by tau**2 (Hinton et al. 2015, as `reference_loss.token_kl`):
- forward_kl: KL(p || q) = sum_v p (log p - log q); dL/ds = q - p.
- reverse_kl: KL(q || p) = sum_v q (log q - log p); dL/ds = q * (log q - log p - KL(q || p)).
- jsd: the generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024) with
  M = beta * p + (1 - beta) * q:  JSD(beta) = beta * KL(p || M) + (1 - beta) * KL(q || M);
  dL/ds = q * (g - sum_v q g) with g = (1 - beta) * (log q - log M). beta = 0.5 is the symmetric
  JSD, bounded by log 2. beta must lie strictly in (0, 1): at either end JSD(beta) is identically 0.
  Its limits are the KLs, scaled: JSD(beta) / beta -> KL(p || q) as beta -> 0 and
  JSD(beta) / (1 - beta) -> KL(q || p) as beta -> 1 (GKD implementations that accept beta = 0 or 1
  return those KLs there); use kind="forward_kl" or "reverse_kl" for them.

All divergence arithmetic is fp32 whatever the models' dtype (bf16 log-probabilities of a large
vocabulary lose most of a KL's precision).

Every function gets fp32 log-probabilities it owns and may overwrite; `log_q` is [c, V'] and the
returned gradient reuses its buffer, so a chunk holds about three [c, V] buffers at its peak.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from leafpipe.distill.heads import log_softmax_at
from leafpipe.distill.spec import KDSpec


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b, -1) for [c, V] tensors without a [c, V] temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def forward_kl(log_p: torch.Tensor, log_q: torch.Tensor, need_grad: bool):
    """KL(p || q) per row of [c, n] log-probabilities over the same categories, and its gradient
    q - p with respect to q's logits; overwrites `log_q`. (`FullTeacher` computes the same from
    the teacher's entropy, kept from `prepare`.)"""
    p = log_p.exp()
    loss = rowdot(p, log_p - log_q)
    return loss, (log_q.exp_().sub_(p) if need_grad else None)


def reverse_kl(log_p: torch.Tensor, log_q: torch.Tensor, need_grad: bool):
    f = log_p.neg_().add_(log_q)  # log q - log p, in log_p's buffer
    q = log_q.exp_()
    loss = rowdot(q, f)
    if not need_grad:
        return loss, None
    return loss, f.sub_(loss.unsqueeze(1)).mul_(q)


def jsd(log_p: torch.Tensor, log_q: torch.Tensor, beta: float, need_grad: bool):
    log_m = log_p + math.log(beta)
    torch.logaddexp(log_m, log_q + math.log1p(-beta), out=log_m)  # log M, without a third temporary
    p = log_p.exp()
    to_teacher = rowdot(p, log_p.sub_(log_m))  # KL(p || M)
    del p, log_p
    g = log_m.neg_().add_(log_q)  # log q - log M, in log_m's buffer
    q = log_q.exp_()
    to_student = rowdot(q, g)  # KL(q || M)
    loss = beta * to_teacher + (1 - beta) * to_student
    if not need_grad:
        return loss, None
    return loss, g.sub_(to_student.unsqueeze(1)).mul_(q).mul_(1 - beta)


class Target:
    """The teacher side of a loss: `prepare(rows, device)` builds what a chunk needs, on the device
    of the student's logits, before they exist (so their buffers do not overlap more than needed),
    `finish(state, log_q, need_grad)` returns (loss [c] fp32, dL/ds [c, V] or None) and may
    overwrite both."""

    def prepare(self, rows: slice, device: torch.device) -> Any:
        raise NotImplementedError

    def finish(self, state: Any, log_q: torch.Tensor, need_grad: bool):
        raise NotImplementedError


class FullTeacher(Target):
    def __init__(self, hidden: torch.Tensor, head: nn.Module, vocab: int, spec: KDSpec) -> None:
        self.hidden, self.head, self.vocab, self.spec = hidden, head, vocab, spec

    def prepare(self, rows: slice, device: torch.device) -> Any:
        with torch.no_grad():
            log_p = log_softmax_at(
                self.head(self.hidden[rows]), self.vocab, self.spec.temperature
            ).to(device)
            if self.spec.kind == "forward_kl":
                p = log_p.exp()
                return p, rowdot(p, log_p)  # teacher's negative entropy; log_p is freed here
            return log_p

    def finish(self, state: Any, log_q: torch.Tensor, need_grad: bool):
        kind = self.spec.kind
        if kind == "forward_kl":
            p, neg_entropy = state
            loss = neg_entropy - rowdot(p, log_q)
            return loss, (log_q.exp_().sub_(p) if need_grad else None)
        if kind == "reverse_kl":
            return reverse_kl(state, log_q, need_grad)
        return jsd(state, log_q, self.spec.beta, need_grad)


class Labels(Target):
    """Cross-entropy with the next tokens: loss = -log q[y], dL/ds = q - onehot(y)."""

    def __init__(self, targets: torch.Tensor) -> None:
        self.targets = targets

    def prepare(self, rows: slice, device: torch.device) -> Any:
        return self.targets[rows].to(device).unsqueeze(1)

    def finish(self, state: Any, log_q: torch.Tensor, need_grad: bool):
        loss = -log_q.gather(1, state).squeeze(1)
        if not need_grad:
            return loss, None
        return loss, log_q.exp_().scatter_add_(
            1, state, torch.full_like(state, -1.0, dtype=log_q.dtype)
        )
