# Paths, input functions and wildcard constraints shared by every rule.
import json
import os
from pathlib import Path

from leafpipe.stages import MODEL_LABELS, VARIANT_LEVEL

R = config["results"]
STAGE = "../scripts/run_stage.py"
ENV = "../envs/leafpipe.yaml"

WORLD_SPLITS = ["teacher_train", "student_train", "distill_train", "test", "test_clean"]
PRETRAINED = ["teacher", "student"]
VARIANTS = config["distill"]["variants"]
MODELS = PRETRAINED + VARIANTS
BENCHMARKS = list(config["evaluation"]["benchmarks"])
SHARDS = list(range(config["scoring"]["shards"]))
CORPUS = config["corpus"]["path"] or f"{R}/world/distill_train.jsonl"


wildcard_constraints:
    role="|".join(PRETRAINED),
    variant="|".join(VARIANT_LEVEL),
    level="instr|instr_resp",
    model="|".join(MODEL_LABELS),
    benchmark="[A-Za-z0-9_]+",
    shard=r"\d+",


def model_location(name):
    """Where a model is read from: the user's folder or hub id, else what the pipeline trained."""
    path = config["models"].get(name, {}).get("path")
    return path or f"{R}/models/{name}"


def model_input(wildcards_or_name):
    """The model as a job input: only local folders are files Snakemake can track."""
    name = getattr(wildcards_or_name, "model", wildcards_or_name)
    location = model_location(name)
    return location if location.startswith(R) or Path(location).exists() else []


def benchmark_file(wildcards):
    bench = config["evaluation"]["benchmarks"][wildcards.benchmark]
    return bench.get("path") or f"{R}/world/{bench['split']}.jsonl"


def tracked(settings):
    """Settings as a `settings` param, so that changing them reruns the rule (Snakemake's params
    trigger). Canonical JSON: the same settings written in another key order are no change."""
    return json.dumps(settings, sort_keys=True)


def evaluation_settings(wildcards):
    evaluation = config["evaluation"]
    shared = {k: v for k, v in evaluation.items() if k != "benchmarks"}
    return tracked({**shared, "benchmark": evaluation["benchmarks"][wildcards.benchmark]})


def distill_data(wildcards):
    level = VARIANT_LEVEL[wildcards.variant]
    return CORPUS if level is None else f"{R}/counterfactuals/{level}.jsonl"


def every_product():
    """Every file and folder this config makes, as targets of `all`.

    Snakemake leaves a deleted intermediate alone while the files made from it are present;
    as targets, a deleted one is rebuilt by a plain rerun, and then only its dependents follow.
    """
    uses_world = CORPUS.startswith(f"{R}/world/") or any(
        "path" not in bench for bench in config["evaluation"]["benchmarks"].values()
    )
    pretrained = [name for name in PRETRAINED if not config["models"][name].get("path")]
    levels = sorted({VARIANT_LEVEL[v] for v in VARIANTS} - {None})
    return (
        (expand("{R}/world/{split}.jsonl", R=R, split=WORLD_SPLITS) if uses_world else [])
        + ([f"{R}/tokenizer"] if pretrained else [])
        + [f"{R}/models/{name}" for name in pretrained + VARIANTS]
        + expand("{R}/scores/{model}.parquet", R=R, model=PRETRAINED)
        + expand("{R}/scores/{model}/shard-{shard}.parquet", R=R, model=PRETRAINED, shard=SHARDS)
        + [f"{R}/detection/tokens.parquet", f"{R}/detection/metrics.json"]
        + expand("{R}/detection/{name}", R=R, name=["inspect.html", "histograms.png", "sweep.csv", "sweep.png"])
        + expand("{R}/counterfactuals/{level}.jsonl", R=R, level=levels)
        + expand(
            "{R}/eval/{model}/{benchmark}.{kind}",
            R=R, model=MODELS, benchmark=BENCHMARKS, kind=["generations.jsonl", "scores.json"],
        )
    )
