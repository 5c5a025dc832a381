"""The models a run compares, one record per distillation variant; torch-free, so the Snakefile
loads it fast on every job.

Adding a variant means adding one `Variant` to `VARIANTS`: the config schema's list of allowed
`distill.variants` (`leafpipe.config`), the workflow's rules and wildcards, the planner and the
report all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One distilled model: what it trains on and toward what, and how the report shows it."""

    name: str
    label: str  # the report's row name
    level: str | None  # the counterfactual level it trains on; None: original samples only
    objective: str  # "kd": the teacher's distributions; "ce": the responses (cross-entropy)
    is_leaf: bool  # a LeaF variant, compared with kd; sft and kd are the reference rows


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("sft", "SFT", level=None, objective="ce", is_leaf=False),
        Variant("kd", "KD w/o mask", level=None, objective="kd", is_leaf=False),
        Variant("leaf_instr", "LeaF (instr)", level="instr", objective="kd", is_leaf=True),
        Variant(
            "leaf_instr_resp", "LeaF (instr+resp)", level="instr_resp", objective="kd", is_leaf=True
        ),
    )
}
# The two models every variant starts from, and every model's report label.
PRETRAINED_LABELS = {"teacher": "Teacher", "student": "Student (pre-KD)"}
MODEL_LABELS = {**PRETRAINED_LABELS, **{name: v.label for name, v in VARIANTS.items()}}


def variant(name: str) -> Variant:
    """The record of a variant, or a ValueError naming the known ones."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    return VARIANTS[name]


def dataset_of(name: str) -> str:
    """The data file a variant trains on, by name: "corpus" or its counterfactual level."""
    return variant(name).level or "corpus"
