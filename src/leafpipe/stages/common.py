"""What every stage module shares: its logger, building a spec from config keys, and torch's
thread count. Torch-free until a stage sets its threads, so the report stage never loads it."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import fields
from typing import Any

# The logger of every stage module: one name, whose level `leafpipe.distill.parallel` raises on
# all but the main process.
log = logging.getLogger("leafpipe")


def _pick(cls: type, values: Mapping[str, Any], not_for: Collection[str] = ()) -> Any:
    """Build a spec dataclass from config keys: every key is one of its fields or named in
    `not_for` (a key of the same section that is deliberately for something else), so a
    misspelt or new setting fails here instead of being dropped in silence."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names - set(not_for))
    if unknown:
        raise TypeError(
            f"{cls.__name__} has no field for the config key(s) {unknown}; if a key is for "
            "something else, name it in the caller's `not_for`"
        )
    return cls(**{k: v for k, v in values.items() if k in names})


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def shard_rows(rows: Sequence[dict[str, Any]], shard: int, shards: int) -> Sequence[dict[str, Any]]:
    """The shard-th of `shards` contiguous slices: gathering them in order gives back every row."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    return rows[shard * len(rows) // shards : (shard + 1) * len(rows) // shards]
