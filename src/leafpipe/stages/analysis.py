"""The attention analysis: how much attention each model's response tokens pay to confounders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leafpipe.files.atomic import atomic_path, read_jsonl
from leafpipe.files.provenance import read_parquet
from leafpipe.models.hub_options import hub_options
from leafpipe.stages.common import _threads, log


def attention(
    config: dict[str, Any],
    model: str,
    model_dir: str | Path,
    corpus_path: str | Path,
    tokens_path: str | Path,
    out_path: str | Path,
    threads: int | None = None,
) -> None:
    """How much attention a model's response tokens pay to detected confounders, and to each
    kind of instruction token (leafpipe.detect.token_kinds), per layer.

    Samples: the corpus groups held out from distillation (distill.val_fraction, by source id),
    so no distilled model trained on them; without a held-out set, the corpus itself (the
    output's `samples_from` column says which). At most attention.samples of them.
    """
    import json

    from leafpipe.detect.confounders import protected_spans
    from leafpipe.distill.data import DistillGroup, validation_split
    from leafpipe.evaluation.attention import AttentionSample, attention_shares
    from leafpipe.models.loading import load_placed_model

    _threads(threads)
    settings = config["attention"]
    rows = read_jsonl(corpus_path)
    groups = [DistillGroup((r["instruction"], r["response"]), source_id=str(r["id"])) for r in rows]
    _, held_out = validation_split(groups, config["distill"]["val_fraction"])
    chosen, origin = (
        (held_out, "held out from distillation") if held_out else (range(len(rows)), "corpus")
    )
    chosen = list(chosen)[: settings["samples"]]
    detected = read_parquet(tokens_path, columns=["id", "spans"]).set_index("id")["spans"]
    samples = []
    for i in chosen:
        row = rows[i]
        spans = [
            (s["start"], s["end"])
            for s in json.loads(detected.get(row["id"], "[]"))
            if s["field"] == "instruction"
        ]
        planted = row.get("distractor_spans")
        samples.append(
            AttentionSample(
                row["instruction"],
                row["response"],
                spans,
                [tuple(p) for p in planted] if planted is not None else None,
                protected_spans(row["instruction"], config["detection"]["protect"]),
                system=row.get("system"),
            )
        )
    loaded, tok = load_placed_model(model_dir, **hub_options(config, model))
    table = attention_shares(
        loaded, tok, samples, batch_size=settings["batch_size"], max_tokens=settings["max_tokens"]
    )
    table.insert(0, "model", model)
    table["samples_from"] = origin
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, index=False)
    log.info("attention of %s: %d samples (%s)", model, len(samples), origin)
