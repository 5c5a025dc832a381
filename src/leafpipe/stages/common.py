"""What every stage module shares: building a spec from config keys, and torch's thread count."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import torch

log = logging.getLogger("leafpipe")


def _pick(cls: type, values: dict[str, Any]) -> Any:
    """Build a spec dataclass from the config keys it knows."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def shard_rows(rows: Sequence[dict[str, Any]], shard: int, shards: int) -> Sequence[dict[str, Any]]:
    """The shard-th of `shards` contiguous slices: gathering them in order gives back every row."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    return rows[shard * len(rows) // shards : (shard + 1) * len(rows) // shards]
