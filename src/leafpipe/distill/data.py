"""The data of causal attention distillation: groups of an original sample and its counterfactuals,
their validation split, and the samples and steps of each epoch.

An epoch is a list of items, each the samples that travel together through a step: with
`counterfactuals: all` (the paper's mixed file) every original and every counterfactual of the
training groups is an item of its own; with `draw_one` an item is one group's original and one
counterfactual drawn for the epoch. Items, their order and the draws are functions of (seed,
epoch) alone, so a resumed run recomputes an epoch's steps rather than storing them
(`leafpipe.distill.checkpoints`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from transformers import PreTrainedTokenizerBase

from leafpipe.distill.spec import ALL, MODES
from leafpipe.text.batching import length_grouped
from leafpipe.text.templates import EncodedSample, encode_sample

ORIGINAL = "original"
COUNTERFACTUAL = "counterfactual"

Pair = tuple[str, str]  # (instruction, response)
SampleRef = tuple[
    int, int
]  # (group index, ORIGINAL_REF for its original or a counterfactual's index)
ORIGINAL_REF = -1
Item = tuple[SampleRef, ...]  # samples that travel together: the unit a step is made of
Step = list[list[Item]]  # one optimiser step: its micro-batches of items


class Text(NamedTuple):
    """A counterfactual's text; response characters before `train_from` are context, not trained."""

    instruction: str
    response: str
    train_from: int = 0


@dataclass
class DistillGroup:
    """One original sample and the counterfactuals made from it (possibly none).

    `source_id` decides whether the group is held out for validation; without one, the
    original's text does. A counterfactual may be given as a plain (instruction, response) pair,
    trained from the start of its response. `system`: the system prompt of every sample of the
    group (pruning never changes it), rendered before each instruction and never trained on.
    """

    original: Pair
    counterfactuals: list[Text] = field(default_factory=list)
    source_id: str | None = None
    system: str | None = None

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
            groups[source] = DistillGroup(
                (row["instruction"], row["response"]),
                source_id=str(source),
                system=row.get("system"),
            )
        elif row["kind"] != COUNTERFACTUAL:
            raise ValueError(
                f"row {rid!r}: kind must be {ORIGINAL!r} or {COUNTERFACTUAL!r}, got {row['kind']!r}"
            )
    for row in rows:
        if row["kind"] == COUNTERFACTUAL:
            rid, source = row["id"], row["source_id"]
            if source not in groups:
                raise ValueError(
                    f"counterfactual {rid!r}: its source {source!r} has no original row"
                )
            if row.get("system") != groups[source].system:
                raise ValueError(
                    f"counterfactual {rid!r}: its system prompt is not its original's "
                    f"(source {source!r}); pruning never changes it"
                )
            groups[source].counterfactuals.append(
                Text(row["instruction"], row["response"], int(row.get("train_from", 0)))
            )
    return list(groups.values())


def validation_split(
    groups: Sequence[DistillGroup], fraction: float
) -> tuple[list[int], list[int]]:
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


def encode_groups(
    tokenizer: PreTrainedTokenizerBase, groups: Sequence[DistillGroup]
) -> list[EncodedGroup]:
    """Every sample of every group as token ids, each with its group's system prompt."""
    return [
        EncodedGroup(
            encode_sample(tokenizer, *g.original, system=g.system),
            [encode_sample(tokenizer, *cf, system=g.system) for cf in g.counterfactuals],
        )
        for g in groups
    ]


def n_trained(sample: EncodedSample) -> int:
    """Trained tokens of a sample: those `Batch.target_mask` marks (targets of positions 0..T-2)."""
    return sum(sample.loss_mask()[1:])


def sample_of(encoded: Sequence[EncodedGroup], ref: SampleRef) -> EncodedSample:
    group, j = ref
    return encoded[group].original if j == ORIGINAL_REF else encoded[group].counterfactuals[j]


def seeded_rng(seed: int, *parts: Any) -> random.Random:
    """A generator for one purpose (`parts`, e.g. epoch and "order") of a run seeded `seed`."""
    # A string seed is hashed with SHA-512: the same in every process, unlike hash().
    return random.Random("/".join(str(p) for p in (seed, *parts)))


def group_items(
    encoded: Sequence[EncodedGroup],
    group_idx: Sequence[int],
    mode: str,
    lam: float,
    draws: random.Random,
) -> list[Item]:
    """The items of the groups `group_idx` (in that order): every sample on its own (`all`), or
    each original with one counterfactual drawn from `draws` (`draw_one`). With `lam` 0 the
    counterfactuals weigh nothing and are left out, so the run is exactly kd on the originals."""
    if mode not in MODES:
        raise ValueError(f"counterfactuals must be one of {MODES}, got {mode!r}")
    with_cf = lam > 0
    if mode == ALL:
        originals = [((i, ORIGINAL_REF),) for i in group_idx]
        cfs = (
            [((i, j),) for i in group_idx for j in range(len(encoded[i].counterfactuals))]
            if with_cf
            else []
        )
        return originals + cfs
    out = []
    for i in group_idx:
        n = len(encoded[i].counterfactuals)
        out.append(
            ((i, ORIGINAL_REF), (i, draws.choice(range(n))))
            if with_cf and n
            else ((i, ORIGINAL_REF),)
        )
    return out


def item_length(encoded: Sequence[EncodedGroup], item: Item) -> int:
    """What length-grouping sorts by: the item's first sample (a `draw_one` item's original)."""
    return len(sample_of(encoded, item[0]))


def epoch_plan(
    encoded: Sequence[EncodedGroup],
    train_idx: Sequence[int],
    epoch: int,
    *,
    seed: int,
    global_batch: int,
    micro_batch: int,
    lam: float,
    mode: str = ALL,
) -> list[Step]:
    """The epoch's optimiser steps, a function of (seed, epoch) only.

    The epoch's items (`group_items`) are shuffled, length-grouped (`batching.length_grouped`, a
    step holds `global_batch` items) and each step is cut into micro-batches of `micro_batch`
    items, so `micro_batch` decides only how a step is split, never which items meet in it:
    changing it to fit memory leaves the training the same up to float rounding. A step's items
    come sorted by length, so its micro-batches pad little.
    """
    epoch_items = group_items(
        encoded, train_idx, mode, lam, seeded_rng(seed, epoch, "counterfactual")
    )
    rng = seeded_rng(seed, epoch, "order")
    order = rng.sample(range(len(epoch_items)), len(epoch_items))
    lengths = [item_length(encoded, it) for it in epoch_items]
    return [
        [
            [epoch_items[k] for k in step[m : m + micro_batch]]
            for m in range(0, len(step), micro_batch)
        ]
        for step in length_grouped(order, lengths, global_batch, rng)
    ]


def validation_plan(
    encoded: Sequence[EncodedGroup],
    val_idx: Sequence[int],
    *,
    seed: int,
    lam: float,
    mode: str = ALL,
) -> Step:
    """The held-out items as one step of one micro-batch, longest first (`rank_share` cuts it).

    A `draw_one` group draws its counterfactual once for the whole run, so epochs are comparable.
    """
    order = sorted(val_idx, key=lambda i: -len(encoded[i].original))
    held_out = group_items(encoded, order, mode, lam, seeded_rng(seed, "validation"))
    return [sorted(held_out, key=lambda it: -item_length(encoded, it))]


def rank_share(step: Step, rank: int, processes: int, micro_batch: int) -> Step:
    """Process `rank`'s micro-batches of an optimiser step (`leafpipe.distill.parallel`).

    Every `processes`-th item of the step, from the `rank`-th on, so each process gets items of
    every length the (length-sorted) step holds; then cut into micro-batches of `micro_batch`.
    With one process this is the step as planned; a process may get none of a small step.
    """
    mine = [i for micro in step for i in micro][rank::processes]
    return [mine[k : k + micro_batch] for k in range(0, len(mine), micro_batch)]
