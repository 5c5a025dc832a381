"""The report's "Generation" table: per model, the backend, dtype and end-of-turn tokens its
completions were made with, and vLLM's tensor-parallel size.

Accuracy moves with these: a completion that runs past a missed end-of-turn token may be graded
on text the model never meant as its answer, and bf16 and float32 decode greedy answers apart.
The figures come from each score file's `generation` (the generate jobs' infos); a model whose
shards, benchmarks or seeds were generated differently shows every value, so a mixed run is seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from leafpipe.report.tables import markdown_table

HEADER = ("model", "backend", "dtype", "stop tokens", "tensor-parallel GPUs")


def generation_section(
    scores: Iterable[Mapping[str, Any]], models: Sequence[str], labels: Mapping[str, str]
) -> list[str]:
    """The section's lines, one row per model of `models` (in that order) that has generation
    settings in `scores` (score files' contents); none when no score file has any."""
    settings: dict[str, list[Mapping[str, Any]]] = {}
    for score in scores:
        settings.setdefault(score["model"], []).extend(score.get("generation") or [])
    rows = [
        [labels.get(model, model), *_cells(settings[model])]
        for model in models
        if settings.get(model)
    ]
    if not rows:
        return []
    return [
        "## Generation",
        "",
        "How each model's completions were generated and where they stop: the end-of-turn "
        "tokens are the union of the tokenizer's eos and the model's generation_config's; "
        "stop strings are each benchmark's (in its score file's `generation`).",
        "",
        *markdown_table(HEADER, rows),
        "",
    ]


def _cells(infos: Sequence[Mapping[str, Any]]) -> list[str]:
    """Backend, dtype, stop tokens and tensor-parallel size, each value seen once, in order."""
    columns = (
        [info["backend"] for info in infos],
        [info["dtype"] for info in infos],
        [", ".join(_token(t) for t in info["stop_tokens"]) for info in infos],
        [str(info.get("tensor_parallel_size", "–")) for info in infos],
    )
    return [" / ".join(dict.fromkeys(values)) for values in columns]


def _token(text: str) -> str:
    """A token as inline code: control characters escaped (a newline shows as `\\n`), and `|`
    escaped so that `<|im_end|>` does not split the table's cell."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return "`" + shown.replace("|", "\\|") + "`"
