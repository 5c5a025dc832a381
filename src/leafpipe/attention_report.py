"""The report's attention section: how much attention each model's response tokens pay to detected
confounders, against other instruction tokens (and, in the world, planted distractors).

LeaF's claim is that distilling on counterfactuals moves the student's attention off confounders;
this is where a run shows whether it did. Per-token mass is the fair comparison, since
confounders are a small share of the instruction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from leafpipe.atomic_io import atomic_path

MEAN = "mean"


def _number(value: float) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def attention_section(table: pd.DataFrame, models: Sequence[str], model_labels: Mapping[str, str]) -> list[str]:
    """The Markdown lines: one row per model, averaged over layers (`attention/{model}.csv`)."""
    mean = table[table["layer"].astype(str) == MEAN].set_index("model")
    planted = "per_token_planted" in mean.columns
    header = ["Model", "per confounder token", "per other instruction token", "ratio"]
    header += ["per planted token"] if planted else []
    header += ["on confounders (total)", "samples"]
    lines = [
        "## Attention to confounders",
        "",
        "Attention mass from response tokens, averaged over heads, response tokens, samples and "
        "layers: per token of each kind, and in total on the detected confounders. Ratio: per "
        "confounder token over per other instruction token (below 1: the model looks at "
        f"confounders less than at the rest). Samples: {mean['samples_from'].iloc[0]}; "
        "per layer in `attention.png` and `results/attention/`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for model in models:
        if model not in mean.index:
            continue
        row = mean.loc[model]
        ratio = row["per_token_confounder"] / row["per_token_other"] if row["per_token_other"] else math.nan
        cells = [model_labels.get(model, model), _number(row["per_token_confounder"]),
                 _number(row["per_token_other"]), _number(ratio)]
        cells += [_number(row["per_token_planted"])] if planted else []
        cells += [_number(row["share_confounder"]), str(int(row["n_samples"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def attention_plot(table: pd.DataFrame, models: Sequence[str], model_labels: Mapping[str, str], path: Path) -> None:
    """Per-token attention on confounders by layer, one line per model."""
    layers = table[table["layer"].astype(str) != MEAN]
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.subplots()
    for j, model in enumerate(models):
        rows = layers[layers["model"] == model]
        if len(rows):
            ax.plot(rows["layer"].astype(int), rows["per_token_confounder"], marker="o", color=f"C{j}",
                    label=model_labels.get(model, model))
    ax.set_xlabel("layer")
    ax.set_ylabel("attention per confounder token")
    ax.set_title("Attention from response tokens onto detected confounders")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
