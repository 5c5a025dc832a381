"""A model wrapper that injects non-finite gradients."""

from __future__ import annotations

import math

import torch


class InfGradient(torch.autograd.Function):
    """Identity forward; backward sets batch row 0's gradient to inf (an overflow in backward)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        grad[0] = math.inf
        return grad
