"""What every stage module shares: its logger, building a spec from config keys, and torch's
thread count. Torch-free until a stage sets its threads, so the report stage never loads it."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from leafpipe.spec_fields import known_fields

# The logger of every stage module: one name, whose level `leafpipe.distill.parallel` raises on
# all but the main process.
log = logging.getLogger("leafpipe")


def _pick(cls: type, values: Mapping[str, Any], not_for: Collection[str] = ()) -> Any:
    """Build a spec dataclass from config keys (`spec_fields.known_fields`: every key is one of
    its fields or named in `not_for`)."""
    return cls(**known_fields(cls, values, not_for))


def _threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def shard_rows(rows: Sequence[dict[str, Any]], shard: int, shards: int) -> Sequence[dict[str, Any]]:
    """The shard-th of `shards` contiguous slices: gathering them in order gives back every row."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    return rows[shard * len(rows) // shards : (shard + 1) * len(rows) // shards]
