"""Pad encoded samples into a batch whose targets are aligned with next-token logits."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from leafpipe.templates import EncodedSample


@dataclass
class Batch:
    """Right-padded batch.

    Shapes: `input_ids`, `attention_mask` [B, T]; `target_mask` [B, T-1] is True where
    `logits[:, t]` predicts a trained token `input_ids[:, t + 1]` (response or end of turn).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.target_mask)))


def collate(samples: Sequence[EncodedSample], pad_id: int) -> Batch:
    width = max(len(s) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(samples), width), dtype=torch.long)
    trained = torch.zeros((len(samples), width), dtype=torch.bool)
    for row, s in enumerate(samples):
        n = len(s)
        ids[row, :n] = torch.tensor(s.input_ids)
        attn[row, :n] = 1
        trained[row, :n] = torch.tensor(s.loss_mask())
    return Batch(ids, attn, trained[:, 1:])


def length_grouped(
    order: Sequence[int], lengths: Sequence[int], batch_size: int, rng: random.Random,
    chunk_batches: int = 50,
) -> list[list[int]]:
    """Cut `order` (indices into `lengths`, already shuffled) into batches of similar lengths.

    Each run of `chunk_batches × batch_size` consecutive indices is sorted longest first and cut
    into batches of `batch_size` (the last one of the last run may be smaller); then the batches
    of each run are shuffled with `rng`, so a run's long and short batches do not come in order.
    Padding then costs little (a batch holds samples of nearby lengths, longest first) while the
    shuffle of `order` still decides which samples meet. The result depends only on the
    arguments, so a seeded `rng` makes it reproducible.
    """
    if batch_size < 1 or chunk_batches < 1:
        raise ValueError("batch_size and chunk_batches must be >= 1")
    chunk = batch_size * chunk_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        # A stable sort keeps the shuffled order among samples of equal length.
        run = sorted(order[start : start + chunk], key=lambda i: -lengths[i])
        cut = [run[k : k + batch_size] for k in range(0, len(run), batch_size)]
        rng.shuffle(cut)
        batches.extend(cut)
    return batches


def response_cross_entropy(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over trained tokens of each sample, shape [B].

    `logits` is [B, T, V]; per-sample means keep one long response from dominating a batch.
    """
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    mask = batch.target_mask.float()
    return (nll * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
