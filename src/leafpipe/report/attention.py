"""The report's attention section: how much attention each model's response tokens pay to detected
confounders, against other instruction tokens (and, in the world, planted distractors), and to
each kind of instruction token (leafpipe.detect.token_kinds).

LeaF's claim is that distilling on counterfactuals moves the student's attention off confounders;
this is where a run shows whether it did. Per-token mass is the fair comparison, since
confounders are a small share of the instruction. On the world the kinds say whether attention
moved off the planted numbers or off numbers in general, which would hurt the problem too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from leafpipe.detect.token_kinds import CORPUS_KINDS
from leafpipe.files.atomic import atomic_path
from leafpipe.report.tables import markdown_table

MEAN = "mean"
# Per-token attention pairs of the world's kind table: (label, numerator column, denominator
# column).
PLANTED_PAIRS = (
    ("planted number / own number", "per_token_kind_planted_number", "per_token_kind_own_number"),
    ("planted / other", "per_token_planted", "per_token_kind_other"),
)


def _number(value: float) -> str:
    return (
        "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    )


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator and not math.isnan(denominator) else math.nan


def _kind_lines(
    mean: pd.DataFrame, models: Sequence[str], model_labels: Mapping[str, str]
) -> list[str]:
    """Per-token attention by kind of instruction token, one row per model (none without kinds)."""
    present = [m for m in models if m in mean.index]
    if "per_token_kind_planted_number" in mean.columns:
        header = ["Model"]
        for label, _, _ in PLANTED_PAIRS:
            first, second = label.split(" / ")
            header += [f"per {first} token", f"per {second} token", "ratio"]
        guide = (
            "Per-token attention on the planted distractor's numbers against the problem's own "
            "numbers, and on any planted token against other instruction tokens (outside the "
            "planted text, not numbers, not protected). LeaF should lower both ratios for the "
            "student: attention moved "
            "off planted numbers, not off the numbers the problem needs."
        )
        cells = []
        for m in present:
            row = mean.loc[m]
            cells.append(
                [model_labels.get(m, m)]
                + [
                    v
                    for _, num, den in PLANTED_PAIRS
                    for v in (
                        _number(row[num]),
                        _number(row[den]),
                        _number(_ratio(row[num], row[den])),
                    )
                ]
            )
    elif "per_token_kind_number" in mean.columns:
        header = ["Model"] + [f"per {k} token" for k in CORPUS_KINDS]
        guide = (
            "Per-token attention by kind of instruction token (no planted labels on this corpus; "
            "protected: text `detection.protect` keeps from pruning)."
        )
        cells = [
            [model_labels.get(m, m)]
            + [_number(mean.loc[m, f"per_token_kind_{k}"]) for k in CORPUS_KINDS]
            for m in present
        ]
    else:
        return []
    return ["", "### By kind of instruction token", "", guide, "", *markdown_table(header, cells)]


def _model_row(row: pd.Series, label: str, planted: bool) -> list[str]:
    """One model's line of the attention table, from its mean over layers."""
    cells = [
        label,
        _number(row["per_token_confounder"]),
        _number(row["per_token_other"]),
        _number(_ratio(row["per_token_confounder"], row["per_token_other"])),
    ]
    cells += [_number(row["per_token_planted"])] if planted else []
    return cells + [_number(row["share_confounder"]), str(int(row["n_samples"]))]


def attention_section(
    table: pd.DataFrame, models: Sequence[str], model_labels: Mapping[str, str]
) -> list[str]:
    """The Markdown lines: one row per model, averaged over layers (`attention/{model}.csv`)."""
    mean = table[table["layer"].astype(str) == MEAN].set_index("model")
    planted = "per_token_planted" in mean.columns
    header = ["Model", "per confounder token", "per other instruction token", "ratio"]
    header += ["per planted token"] if planted else []
    header += ["on confounders (total)", "samples"]
    rows = [
        _model_row(mean.loc[model], model_labels.get(model, model), planted)
        for model in models
        if model in mean.index
    ]
    lines = [
        "## Attention to confounders",
        "",
        "Attention mass from response tokens, averaged over heads, response tokens, samples and "
        "layers: per token of each kind, and in total on the detected confounders. Ratio: per "
        "confounder token over per other instruction token (below 1: the model looks at "
        f"confounders less than at the rest). Samples: {mean['samples_from'].iloc[0]}; "
        "per layer in `attention.png` and `results/attention/`.",
        "",
        *markdown_table(header, rows),
    ]
    return lines + _kind_lines(mean, models, model_labels) + [""]


def attention_plot(
    table: pd.DataFrame, models: Sequence[str], model_labels: Mapping[str, str], path: Path
) -> None:
    """Per-token attention on confounders by layer, one line per model; on the world a second
    panel gives, per layer, per planted-number token over per own-number token."""
    layers = table[table["layer"].astype(str) != MEAN]
    world = "per_token_kind_planted_number" in table.columns
    fig = Figure(figsize=(7.0, 7.5 if world else 4.0))
    axes = fig.subplots(2, 1, sharex=True) if world else [fig.subplots()]
    panels = [
        (axes[0], "attention per confounder token", lambda rows: rows["per_token_confounder"])
    ]
    if world:
        panels.append(
            (
                axes[1],
                "per planted number / per own number",
                lambda rows: (
                    rows["per_token_kind_planted_number"] / rows["per_token_kind_own_number"]
                ),
            )
        )
    for ax, ylabel, values in panels:
        for j, model in enumerate(models):
            rows = layers[layers["model"] == model]
            if len(rows):
                ax.plot(
                    rows["layer"].astype(int),
                    values(rows),
                    marker="o",
                    color=f"C{j}",
                    label=model_labels.get(model, model),
                )
        ax.set_ylabel(ylabel)
    if world:
        axes[1].axhline(1.0, color="grey", linestyle=":", linewidth=1)
    axes[-1].set_xlabel("layer")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title("Attention from response tokens onto detected confounders")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")


def mean_over_seeds(attention: pd.DataFrame) -> pd.DataFrame:
    """The seeds' attention tables (a `seed` column) averaged per model and layer: what the
    attention section shows for several seeds."""
    if "seed" not in attention or attention["seed"].nunique() <= 1:
        return attention.drop(columns="seed", errors="ignore")
    table = attention.drop(columns="seed").assign(layer=attention["layer"].astype(str))
    groups = table.groupby(["model", "layer"], sort=False)
    numeric = list(table.select_dtypes("number").columns)
    other = [c for c in table.columns if c not in numeric and c not in ("model", "layer")]
    return groups[numeric].mean().join(groups[other].first()).reset_index()
