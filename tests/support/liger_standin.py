"""A pure-torch stand-in for Liger-Kernel's `LigerFusedLinearJSD`, so that the CPU tests can check
what `leafpipe.distill.liger_loss` hands it and how it scales what it returns.

It follows the semantics Liger documents for its fused linear JSD (liger-kernel 0.8.5, the
`LigerFusedLinearJSD` docstring and the comments of its JSD kernel): with P the teacher's and Q the
student's softmax of logits / temperature, per row beta * KL(P || M) + (1 - beta) * KL(Q || M),
M = beta * P + (1 - beta) * Q, with beta = 0 taken as KL(P || Q) and beta = 1 as KL(Q || P); the
MEAN over rows, not scaled by temperature**2. It also refuses what Liger's kernels cannot take:
labels here, operands of two dtypes, heads of different vocabularies.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FusedLinearJSDStandIn(nn.Module):
    """`LigerFusedLinearJSD(jsd_beta, ignore_index, temperature, accum_dtype)`'s forward in torch.

    `made` lists every instance, so a test can see the arguments leafpipe built it with."""

    made: list[FusedLinearJSDStandIn] = []

    def __init__(
        self,
        jsd_beta: float = 0.5,
        ignore_index: int = -100,
        temperature: float = 1.0,
        accum_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.beta, self.temperature, self.accum_dtype = jsd_beta, temperature, accum_dtype
        self.made.append(self)

    def forward(self, student_input, student_weight, teacher_input, teacher_weight, shift_labels):
        assert shift_labels is None, "leafpipe passes trained rows only, no labels"
        assert student_input.dtype == student_weight.dtype, "Liger's products take one dtype"
        assert teacher_input.dtype == teacher_weight.dtype
        assert teacher_weight.shape[0] == student_weight.shape[0], "one vocabulary for both heads"
        log_q = torch.log_softmax((student_input @ student_weight.T).float() / self.temperature, -1)
        log_p = torch.log_softmax((teacher_input @ teacher_weight.T).float() / self.temperature, -1)
        p, q, beta = log_p.exp(), log_q.exp(), self.beta
        if beta == 0.0:
            per_row = (p * (log_p - log_q)).sum(-1)
        elif beta == 1.0:
            per_row = (q * (log_q - log_p)).sum(-1)
        else:
            log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
            per_row = beta * (p * (log_p - log_m)).sum(-1) + (1 - beta) * (q * (log_q - log_m)).sum(
                -1
            )
        return per_row.mean()
