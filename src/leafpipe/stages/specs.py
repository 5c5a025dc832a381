"""What each stage reads of the config, in one place: its rule tracks exactly that, and it can
read nothing else.

A stage's `StageSpec` names the config keys it reads, as dotted paths (`models.{role}.path`;
`distill` for a whole section; placeholders filled from the job's wildcards, and `{model_role}`
from `{model}`: the role whose `trust_remote_code` a model follows), and which of them change no
output (`untracked`). From it
- the workflow derives each rule's `settings` param (`tracked_settings`): the values at those
  paths, less the untracked ones, as canonical JSON, so that changing a setting reruns exactly
  the rules whose stage reads it (Snakemake's params trigger);
- the adapter and the command line hand the stage its config cut down to those paths
  (`stage_config`), which refuses any other key, so a stage cannot read a setting its rule does
  not track.

Torch-free: `workflow/rules/common.smk` imports this on every Snakemake start.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leafpipe.config import model_role

WHERE = "leafpipe/stages/specs.py"
EVERYTHING = "*"  # a path that stands for the whole config


@dataclass(frozen=True)
class StageSpec:
    """`reads`: the dotted config paths the stage reads; `untracked`: those of them (or keys
    inside them) that change none of its outputs, left out of its rule's `settings`."""

    reads: tuple[str, ...]
    untracked: tuple[str, ...] = ()


# Where a run's metrics go besides its own files (leafpipe.tracking): never what it computes.
TRACKING = ("report_to", "tracking")
# The execution settings of distillation: which variants exist, how often it checkpoints and
# logs, where its metrics go, over how many processes it runs and how long one waits for the
# others. None changes the weights (a data-parallel run trains what one process would,
# leafpipe.distill.parallel), so editing them must not retrain anything.
DISTILL_EXECUTION = (
    "distill.variants",
    "distill.checkpoint_every",
    "distill.log_every",
    "distill.gpus",
    "distill.collective_timeout_min",
    *TRACKING,
)
TRUST = "models.{model_role}.trust_remote_code"
BOTH_TRUSTS = ("models.teacher.trust_remote_code", "models.student.trust_remote_code")
# The hub revision a model's weights and tokenizer are loaded at (models.hub_options.hub_options):
# read wherever the model's trust is.
REVISION = "models.{model_role}.revision"
BOTH_REVISIONS = ("models.teacher.revision", "models.student.revision")
BENCHMARK = "evaluation.benchmarks.{benchmark}"

# Keys that only the workflow and the report read, so that changing one reruns the report alone:
# where and how jobs run (results, seeds, hardware, resources, evaluation.gpus: the GPU resource
# of a generate job, which uses all it sees).
SPECS: dict[str, StageSpec] = {
    "world": StageSpec(("world",)),
    "tokenizer": StageSpec(("tokenizer.vocab_size",)),
    "pretrain": StageSpec(("models.{role}", "seed")),
    "import_gguf": StageSpec(("models.{role}.gguf",)),
    # The parent model (derive.from) is the other role, trusted as that role is.
    "derive_model": StageSpec(("models.{role}.derive", *BOTH_TRUSTS, *BOTH_REVISIONS)),
    # The student's trust: its tokenizer counts a sample's tokens for corpus.max_tokens.
    "corpus": StageSpec(("corpus", "models.student.trust_remote_code", "models.student.revision")),
    "score": StageSpec(
        (
            "scoring",
            "detection.response_level",
            "detection.rules",
            "detection.response_scopes",
            TRUST,
            REVISION,
        )
    ),
    "gather_scores": StageSpec(()),
    "detect": StageSpec(("detection",)),
    "inspect": StageSpec(("inspection", "detection")),
    "counterfactuals": StageSpec(("scoring.steps", "detection.rules", "detection.widen_words")),
    "validate_counterfactuals": StageSpec(("validity", *BOTH_TRUSTS, *BOTH_REVISIONS)),
    "teacher_logits": StageSpec(
        (
            "distill.teacher_topk",
            "distill.kd.temperature",
            "distill.kd.chunk_tokens",
            "distill.micro_batch",
            *BOTH_TRUSTS,
            *BOTH_REVISIONS,
        ),
        # How the teacher's forward passes are batched and cut into chunks: not what they
        # compute (the cache holds each sample's own top-k).
        untracked=("distill.micro_batch", "distill.kd.chunk_tokens"),
    ),
    "distill": StageSpec(
        ("distill", "seed", *BOTH_TRUSTS, *BOTH_REVISIONS, *TRACKING), untracked=DISTILL_EXECUTION
    ),
    "attention": StageSpec(
        ("attention", "distill.val_fraction", "detection.protect", TRUST, REVISION)
    ),
    "benchmark_data": StageSpec((BENCHMARK,)),
    "generate": StageSpec(
        (
            BENCHMARK,
            "evaluation.max_new_tokens",
            "evaluation.shards",
            "evaluation.backend",
            "evaluation.batch_size",
            "seed",
            TRUST,
            REVISION,
        )
    ),
    # The batch size, token limit and seed are written into the scores.
    "grade": StageSpec(
        (
            BENCHMARK,
            "evaluation.batch_size",
            "evaluation.max_new_tokens",
            "evaluation.code_tests",
            "seed",
        )
    ),
    "report": StageSpec((EVERYTHING,)),
    # The kind picks the format; the rule exists only with evaluation.exports on.
    "export_samples": StageSpec((BENCHMARK,)),
    # The seed goes to lm-eval's --seed, the revision to its model_args.
    "lm_eval": StageSpec(("evaluation.lm_eval", "seed", TRUST, REVISION)),
}


def paths(stage: str, wildcards: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A stage's (read, untracked) paths for a job with these wildcards (or CLI arguments)."""
    spec = SPECS[stage]
    values = {k: str(v) for k, v in wildcards.items()}
    if "model" in values:
        values["model_role"] = model_role(values["model"])
    try:
        return (
            tuple(p.format_map(values) for p in spec.reads),
            tuple(p.format_map(values) for p in spec.untracked),
        )
    except KeyError as err:
        raise KeyError(f"stage {stage!r}: its spec in {WHERE} needs the wildcard {err}") from None


class StageConfig(dict):
    """A config cut down to what a stage declares (`SPECS`): reading any other key raises a
    KeyError that names the stage, the key and this module. A declared key that the config
    lacks (models.teacher.path, say) reads as absent, as in a plain dict.

    A plain dict otherwise (JSON, deepcopy and pickle see its items); `whole` keeps the config
    it was cut from, for a stage that starts itself again in other processes (`whole_config`).
    """

    def __init__(self, stage: str, prefix: str = "") -> None:
        super().__init__()
        self.stage, self.prefix = stage, prefix
        self.declared: set[str] = set()
        self.whole: dict[str, Any] | None = None

    def _undeclared(self, key: Any) -> KeyError:
        return KeyError(
            f"stage {self.stage!r} reads config key {self.prefix + str(key)!r}, which its spec in "
            f"{WHERE} does not declare: declare it there (and so track it), or do not read it"
        )

    def __missing__(self, key: Any) -> Any:
        if key in self.declared:
            raise KeyError(key)
        raise self._undeclared(key)

    def get(self, key: Any, default: Any = None) -> Any:
        if key not in self.declared:
            raise self._undeclared(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        if key not in self.declared:
            raise self._undeclared(key)
        return super().__contains__(key)


def _place(node: StageConfig, parts: list[str], source: Any) -> None:
    """Copy `source`'s value at `parts` under `node`, declaring each key on the way."""
    key, rest = parts[0], parts[1:]
    node.declared.add(key)
    if not isinstance(source, Mapping) or key not in source:
        return  # declared, absent: reads as absent
    value = source[key]
    if not rest or not isinstance(value, Mapping):
        dict.__setitem__(node, key, copy.deepcopy(value))
        return
    child = dict.get(node, key)
    if child is None:
        child = StageConfig(node.stage, f"{node.prefix}{key}.")
        dict.__setitem__(node, key, child)
    if isinstance(child, StageConfig):  # else: the whole section is already there
        _place(child, rest, value)


def stage_config(
    stage: str, config: Mapping[str, Any], wildcards: Mapping[str, Any]
) -> dict[str, Any]:
    """The config `stage` may read: `config` at its spec's paths, nothing else (the whole
    config, for the report)."""
    reads, _ = paths(stage, wildcards)
    if EVERYTHING in reads:
        return dict(config)
    pruned = StageConfig(stage)
    # Whole sections first, so that a section and a key inside it give the whole section.
    for path in sorted(reads, key=lambda p: p.count(".")):
        _place(pruned, path.split("."), config)
    pruned.whole = dict(config)
    return pruned


def whole_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config a stage's config was cut from: to hand on to the same stage run again in
    other processes, which cut it down again (leafpipe.distill.parallel)."""
    whole = getattr(config, "whole", None)
    return dict(config) if whole is None else whole


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in dict.items(value)}
    return value


def _drop(tree: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    for key in parents:
        tree = tree.get(key)
        if not isinstance(tree, dict):
            return
    tree.pop(last, None)


def tracked_settings(stage: str, config: Mapping[str, Any], wildcards: Mapping[str, Any]) -> str:
    """A rule's `settings` param: what its stage reads, less what changes no output, as
    canonical JSON (the same settings written in another key order are no change)."""
    tree = _plain(stage_config(stage, config, wildcards))
    for path in paths(stage, wildcards)[1]:
        _drop(tree, path)
    return json.dumps(tree, sort_keys=True)
