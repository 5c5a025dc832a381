"""One function per pipeline stage, files in and files out, by phase of LeaF.

The Snakemake rules (through `leafpipe.execution.adapter`) and the `leafpipe` command line both
call these by the rule's name, so a rule and its hand-run equivalent can never drift apart.
Every output is written atomically. What each stage reads of the config is declared in
`leafpipe.stages.specs`.

The stage modules load on first use: the workflow imports `leafpipe.stages.specs` on every
Snakemake start, which must not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it
_HOMES = {
    "world": "prepare",
    "tokenizer": "prepare",
    "pretrain": "prepare",
    "import_gguf": "prepare",
    "derive_model": "prepare",
    "corpus": "prepare",
    "score": "detection",
    "gather_scores": "detection",
    "detect": "detection",
    "inspect": "detection",
    "counterfactuals": "detection",
    "validate_counterfactuals": "detection",
    "teacher_logits": "training",
    "distill": "training",
    "attention": "analysis",
    "benchmark_data": "evaluation",
    "generate": "evaluation",
    "grade": "evaluation",
    "report": "reporting",
    "export_samples": "exports",
    "lm_eval": "exports",
    "shard_rows": "common",
}
# The model-loading helpers, by the module that defines them.
_LOADING = {
    "load_model": "loading",
    "load_placed_model": "loading",
    "trusts_remote_code": "hub_options",
}

__all__ = [*_HOMES, *_LOADING]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        module = importlib.import_module(f"leafpipe.stages.{_HOMES[name]}")
    elif name in _LOADING:
        module = importlib.import_module(f"leafpipe.models.{_LOADING[name]}")
    else:
        raise AttributeError(f"module 'leafpipe.stages' has no attribute {name!r}")
    return getattr(module, name)
