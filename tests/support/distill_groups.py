"""Distillation groups and helpers that several trainer tests share."""

from __future__ import annotations

import csv

import torch

from leafpipe.distill.data import (
    DistillGroup,
)
from leafpipe.text.templates import RESPONSE

DISTRACTORS = ["Mia owns 9 red cars. ", "The sky was blue on day 8. "]
# Optimiser steps of two items accumulated over micro-batches of one, at a learning rate that moves
# a tiny model within a few steps, counterfactual tokens weighted like the originals' (λ = 1): the
# settings of the tests that count steps and checkpoints; each adds its epochs and the rest.
TWO_ITEM_STEPS = dict(lam=1.0, global_batch=2, micro_batch=1, lr=3e-3)


def many_groups(samples, n: int = 8) -> list[DistillGroup]:
    """n groups of different lengths: the samples with a few words added to the instruction and
    the response, half of them with a counterfactual (the distractor removed)."""
    groups = []
    for k in range(n):
        (instruction, response), distractor = samples[k % 2], DISTRACTORS[k % 2]
        instruction = "Think. " * (k // 2) + instruction
        response = response + " Done." * (3 * k % 5)
        cfs = [(instruction.replace(distractor, ""), response)] if k % 4 < 2 else []
        groups.append(DistillGroup((instruction, response), cfs, source_id=f"g{k}"))
    return groups


def mixed_groups(samples) -> list[DistillGroup]:
    """Four groups of `many_groups` and four much shorter ones: a micro-batch of them packs."""
    short = [
        DistillGroup(
            (f"Add {k} and 4.", "The answer is 7."),
            [(f"Add {k} and 4 now.", "The answer is 7.")],
            source_id=f"short{k}",
        )
        for k in range(4)
    ]
    return many_groups(samples, 4) + short


def trained_mask(sample) -> torch.Tensor:
    """By hand: targets that are response tokens at or after `train_from`, or the token after the
    response (end of turn); [1, T-1]."""
    last = max(i for i, f in enumerate(sample.fields) if f == RESPONSE)
    keep = [
        (f == RESPONSE and start >= sample.train_from) or i == last + 1
        for i, (f, (start, _)) in enumerate(zip(sample.fields, sample.offsets))
    ]
    return torch.tensor(keep[1:])[None]


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def read_metrics(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def original_row(source_id: str, instruction: str, response: str) -> dict:
    """A counterfactual file's row of an original sample, which removes nothing."""
    return dict(
        id=source_id,
        source_id=source_id,
        kind="original",
        instruction=instruction,
        response=response,
        removed=[],
    )


def counterfactual_row(
    source_id: str, index: int, instruction: str, response: str, removed: list[dict]
) -> dict:
    """A counterfactual file's row: the `index`-th counterfactual of `source_id`, with the spans
    it `removed` (each a dict of field, start, end and text)."""
    row = original_row(source_id, instruction, response)
    return row | dict(id=f"{source_id}#cf{index}", kind="counterfactual", removed=removed)
