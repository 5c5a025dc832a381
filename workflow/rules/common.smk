# Paths, input functions and wildcard constraints shared by every rule.
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
CORPUS = config["corpus"]["path"] or f"{R}/world/distill_train.jsonl"


wildcard_constraints:
    role="|".join(PRETRAINED),
    variant="|".join(VARIANT_LEVEL),
    level="instr|instr_resp",
    model="|".join(MODEL_LABELS),
    benchmark="[A-Za-z0-9_]+",


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


def distill_data(wildcards):
    level = VARIANT_LEVEL[wildcards.variant]
    return CORPUS if level is None else f"{R}/counterfactuals/{level}.jsonl"
