"""Pad encoded samples into a batch whose targets are aligned with next-token logits."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from leafpipe.text.templates import EncodedSample


@dataclass
class Batch:
    """Right-padded batch (`collate`) or packed batch (`pack`).

    Shapes: `input_ids`, `attention_mask` [B, T]; `target_mask` [B, T-1] is True where
    `logits[:, t]` predicts a trained token `input_ids[:, t + 1]` (response or end of turn).
    A packed batch has no `attention_mask` and `position_ids` [B, T] that restart at 0 for
    each sample.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    target_mask: torch.Tensor
    position_ids: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            *(
                None if t is None else t.to(device)
                for t in (self.input_ids, self.attention_mask, self.target_mask, self.position_ids)
            )
        )


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


def pack(samples: Sequence[EncodedSample], pad_id: int) -> tuple[Batch, list[int]]:
    """Several samples per row, as wide as the longest: short samples fill long ones' padding.

    Rows are filled first-fit, longest sample first. Each sample's position ids restart at 0
    and there is no attention mask: transformers then reads the sample boundaries from the
    position ids and keeps attention inside each sample (a block-diagonal causal mask, with
    eager and SDPA attention alike, or FlashAttention-2's variable-length kernels), so a
    sample's hidden states, and its loss, are the same as unpacked. The padding at a row's end
    is a segment of its own and is never trained. Returns the batch and the samples' indices
    in the row-major order of its trained tokens (what `TeacherCache.gather` must follow).
    """
    width = max(len(s) for s in samples)
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(samples)), key=lambda i: -len(samples[i])):
        n = len(samples[i])
        row = next((r for r, space in enumerate(free) if n <= space), None)
        if row is None:
            rows.append([])
            free.append(width)
            row = len(rows) - 1
        rows[row].append(i)
        free[row] -= n
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    trained = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            s = samples[i]
            n = len(s)
            ids[r, at : at + n] = torch.tensor(s.input_ids)
            positions[r, at : at + n] = torch.arange(n)
            trained[r, at : at + n] = torch.tensor(s.loss_mask())
            # Nothing predicts a sample's first token (unpacked it is position 0), so the
            # previous sample's last position must not be trained on it.
            trained[r, at] = False
            at += n
        positions[r, at:] = torch.arange(width - at)
    return Batch(ids, None, trained[:, 1:], positions), [i for row in rows for i in row]


def length_grouped(
    order: Sequence[int],
    lengths: Sequence[int],
    batch_size: int,
    rng: random.Random,
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
