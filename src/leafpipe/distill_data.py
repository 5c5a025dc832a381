"""The data of causal attention distillation: groups of an original sample and its counterfactuals,
their validation split, and the batches of each epoch.

Batch order and counterfactual draws are functions of (seed, epoch) alone, so a resumed run
recomputes an epoch's batches rather than storing them (`leafpipe.distill_checkpoints`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from leafpipe.batching import length_grouped
from leafpipe.templates import EncodedSample, encode_sample

ORIGINAL = "original"
COUNTERFACTUAL = "counterfactual"

Pair = tuple[str, str]  # (instruction, response)
Step = list[list[int]]  # one optimiser step: its micro-batches of group indices


@dataclass
class DistillGroup:
    """One original sample and the counterfactuals made from it (possibly none).

    `source_id` decides whether the group is held out for validation; without one, the
    original's text does.
    """

    original: Pair
    counterfactuals: list[Pair] = field(default_factory=list)
    source_id: str | None = None

    def key(self) -> str:
        return self.source_id if self.source_id is not None else "\x00".join(self.original)


def load_groups(rows: Sequence[dict]) -> list[DistillGroup]:
    """Group counterfactual-JSONL rows (docs/data-schemas.md) by their original sample.

    Groups come in the order of the originals in `rows`, counterfactuals in row order, so the
    result (and hence training) does not depend on how rows of different kinds interleave.
    """
    groups: dict[str, DistillGroup] = {}
    for row in rows:
        rid, source = row["id"], row["source_id"]
        if row["kind"] == ORIGINAL:
            if source in groups:
                raise ValueError(f"original {rid!r}: source {source!r} has two original rows")
            groups[source] = DistillGroup((row["instruction"], row["response"]), source_id=str(source))
        elif row["kind"] != COUNTERFACTUAL:
            raise ValueError(
                f"row {rid!r}: kind must be {ORIGINAL!r} or {COUNTERFACTUAL!r}, "
                f"got {row['kind']!r}"
            )
    for row in rows:
        if row["kind"] == COUNTERFACTUAL:
            rid, source = row["id"], row["source_id"]
            if source not in groups:
                raise ValueError(
                    f"counterfactual {rid!r}: its source {source!r} has no original row"
                )
            groups[source].counterfactuals.append((row["instruction"], row["response"]))
    return list(groups.values())


def validation_split(groups: Sequence[DistillGroup], fraction: float) -> tuple[list[int], list[int]]:
    """Indices of training and of held-out groups.

    A group is held out when a hash of its source id falls below `fraction`, so the split does
    not depend on the order of the groups, on the seed, or on which other groups exist: adding
    samples to a corpus never moves an old one between the two sets.
    """
    train, val = [], []
    for i, group in enumerate(groups):
        digest = hashlib.sha256(f"leafpipe-validation:{group.key()}".encode()).digest()
        (val if int.from_bytes(digest[:8], "big") / 2**64 < fraction else train).append(i)
    return train, val


@dataclass
class EncodedGroup:
    """A `DistillGroup` as token ids, encoded once for the whole run."""

    original: EncodedSample
    counterfactuals: list[EncodedSample]


def encode_groups(tokenizer: PreTrainedTokenizerBase, groups: Sequence[DistillGroup]) -> list[EncodedGroup]:
    return [
        EncodedGroup(encode_sample(tokenizer, *g.original),
                     [encode_sample(tokenizer, *cf) for cf in g.counterfactuals])
        for g in groups
    ]


def n_trained(sample: EncodedSample) -> int:
    """Trained tokens of a sample: those `Batch.target_mask` marks (targets of positions 0..T-2)."""
    return sum(sample.loss_mask()[1:])


def seeded_rng(seed: int, *parts: Any) -> random.Random:
    """A generator for one purpose (`parts`, e.g. epoch and "order") of a run seeded `seed`."""
    # A string seed is hashed with SHA-512: the same in every process, unlike hash().
    return random.Random("/".join(str(p) for p in (seed, *parts)))


def epoch_plan(
    encoded: Sequence[EncodedGroup], train_idx: Sequence[int], epoch: int, *,
    seed: int, global_batch: int, micro_batch: int, lam: float,
) -> tuple[list[Step], dict[int, EncodedSample]]:
    """The epoch's optimiser steps and the counterfactual each training group drew (none when
    `lam` is 0), both functions of (seed, epoch) only.

    Steps are length-grouped (`batching.length_grouped` with the global batch) and then cut
    into micro-batches, so `micro_batch` decides only how a step is split, never which
    groups meet in it: changing it to fit memory leaves the training the same up to float
    rounding. A step's groups come sorted by length, so its micro-batches pad little.
    """
    rng = seeded_rng(seed, epoch, "order")
    order = rng.sample(train_idx, len(train_idx))
    lengths = [len(e.original) for e in encoded]
    steps = [
        [step[k : k + micro_batch] for k in range(0, len(step), micro_batch)]
        for step in length_grouped(order, lengths, global_batch, rng)
    ]
    drawn = {}
    if lam > 0:
        cf_rng = seeded_rng(seed, epoch, "counterfactual")
        drawn = {i: cf_rng.choice(encoded[i].counterfactuals)
                 for i in train_idx if encoded[i].counterfactuals}
    return steps, drawn


def rank_share(step: Step, rank: int, world: int, micro_batch: int) -> Step:
    """Process `rank`'s micro-batches of an optimiser step (`leafpipe.data_parallel`).

    Every `world`-th group of the step, from the `rank`-th on, so each process gets groups of
    every length the (length-sorted) step holds; then cut into micro-batches of `micro_batch`.
    With one process this is the step as planned; a process may get none of a small step.
    """
    mine = [i for micro in step for i in micro][rank::world]
    return [mine[k : k + micro_batch] for k in range(0, len(mine), micro_batch)]
