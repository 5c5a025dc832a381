"""A spec record's fields from a config section, strictly: the one place where config keys meet
the dataclasses that take them (the stages' `_pick`, `DistillSpec.from_config`), so a misspelt
or new setting fails the same way everywhere instead of being dropped in silence. Torch-free."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import fields
from typing import Any


def known_fields(
    cls: type, values: Mapping[str, Any], not_for: Collection[str] = ()
) -> dict[str, Any]:
    """The entries of `values` that are fields of the dataclass `cls`. Every other key must be
    named in `not_for` (a key of the same section that is deliberately for something else)."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names - set(not_for))
    if unknown:
        raise TypeError(
            f"{cls.__name__} has no field for the config key(s) {unknown}; if a key is for "
            "something else, name it in the caller's `not_for`"
        )
    return {k: v for k, v in values.items() if k in names}
