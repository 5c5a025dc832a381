"""Small teacher/student tensors and a reference divergence for the distillation-loss tests."""

from __future__ import annotations

import math

import torch
from torch import nn

B, T, HS, HT, V = 3, 9, 8, 12, 23


def token_mask(layout: str) -> torch.Tensor:
    """[B, T-1] target masks: which logits positions predict a trained token."""
    m = torch.zeros(B, T - 1, dtype=torch.bool)
    if layout == "full":  # every position of every row trained
        m[:] = True
    elif layout == "right_padding":  # rows of 9, 6 and 4 tokens, prompt of 2: targets 2..len-1
        for row, n in enumerate((9, 6, 4)):
            m[row, 1 : n - 1] = True
    elif layout == "empty_row":  # the middle row has no trained token
        m[0, 3:] = True
        m[2, 1:5] = True
    elif layout == "nothing":
        pass
    else:
        raise ValueError(layout)
    return m


def make_tensors(seed: int = 0, teacher_vocab: int = V, bias: bool = False):
    g = torch.Generator().manual_seed(seed)
    sh = torch.randn(B, T, HS, generator=g).requires_grad_()
    th = torch.randn(B, T, HT, generator=g).requires_grad_()  # must receive no gradient
    shead, thead = nn.Linear(HS, V, bias=bias), nn.Linear(HT, teacher_vocab, bias=False)
    with torch.no_grad():  # peaky distributions: logits of a few units
        shead.weight.copy_(torch.randn(V, HS, generator=g) * 1.5 / math.sqrt(HS))
        thead.weight.copy_(torch.randn(teacher_vocab, HT, generator=g) * 3.0 / math.sqrt(HT))
        if bias:
            shead.bias.copy_(torch.randn(V, generator=g))
    return sh, shead, th, thead


def reference_divergence(
    kind: str, log_p: torch.Tensor, log_q: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-token divergence between teacher log-probs `log_p` and student log-probs `log_q`
    [N, V]."""
    p, q = log_p.exp(), log_q.exp()
    if kind == "forward_kl":
        return (p * (log_p - log_q)).sum(-1)
    if kind == "reverse_kl":
        return (q * (log_q - log_p)).sum(-1)
    log_m = torch.log(beta * p + (1 - beta) * q)
    return beta * (p * (log_p - log_m)).sum(-1) + (1 - beta) * (q * (log_q - log_m)).sum(-1)
