# Paths, input functions and wildcard constraints shared by every rule.
import json
import os
from pathlib import Path

from leafpipe.stages import MODEL_LABELS, VARIANT_LEVEL, VARIANT_OBJECTIVE

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
# k of the teacher's top-k cache; null: each kd job runs the teacher itself.
TEACHER_TOPK = config["distill"].get("teacher_topk")


wildcard_constraints:
    role="|".join(PRETRAINED),
    variant="|".join(VARIANT_LEVEL),
    level="instr|instr_resp",
    source="corpus|instr|instr_resp",
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


def benchmark_input(wildcards):
    """The file a benchmark is read from: a world split, the entry's `path`, or none (its data
    package or the hub)."""
    bench = config["evaluation"]["benchmarks"][wildcards.benchmark]
    if "split" in bench:
        return f"{R}/world/{bench['split']}.jsonl"
    return bench.get("path", [])


def tracked(settings):
    """Settings as a `settings` param, so that changing them reruns the rule (Snakemake's params
    trigger). Canonical JSON: the same settings written in another key order are no change."""
    return json.dumps(settings, sort_keys=True)


def generation_shards(benchmark):
    bench = config["evaluation"]["benchmarks"][benchmark]
    return bench.get("shards", config["evaluation"]["shards"])


def generations(wildcards):
    """A (model, benchmark)'s generation shards, in order: grading reads them all."""
    return [f"{R}/eval/{wildcards.model}/{wildcards.benchmark}.generations-{k}.jsonl"
            for k in range(generation_shards(wildcards.benchmark))]


def evaluation_settings(wildcards):
    evaluation = config["evaluation"]
    shared = {k: v for k, v in evaluation.items() if k != "benchmarks"}
    return tracked({**shared, "benchmark": evaluation["benchmarks"][wildcards.benchmark]})


def data_source(variant):
    """The data file a variant trains on, by name: "corpus" or its counterfactual level."""
    return VARIANT_LEVEL[variant] or "corpus"


def source_data(source):
    return CORPUS if source == "corpus" else f"{R}/counterfactuals/{source}.jsonl"


def distill_data(wildcards):
    return source_data(data_source(wildcards.variant))


def uses_teacher_cache(variant):
    return bool(TEACHER_TOPK) and VARIANT_OBJECTIVE[variant] == "kd"


def teacher_cache(wildcards):
    """The teacher top-k cache a variant reads instead of the teacher (none for sft or without teacher_topk)."""
    if not uses_teacher_cache(wildcards.variant):
        return []
    return f"{R}/teacher_logits/{data_source(wildcards.variant)}.safetensors"


def every_product():
    """Every file and folder this config makes, as targets of `all`.

    Snakemake leaves a deleted intermediate alone while the files made from it are present;
    as targets, a deleted one is rebuilt by a plain rerun, and then only its dependents follow.
    """
    uses_world = CORPUS.startswith(f"{R}/world/") or any(
        "split" in bench for bench in config["evaluation"]["benchmarks"].values()
    )
    pretrained = [name for name in PRETRAINED if not config["models"][name].get("path")]
    levels = sorted({VARIANT_LEVEL[v] for v in VARIANTS} - {None})
    caches = sorted({data_source(v) for v in VARIANTS if uses_teacher_cache(v)})
    return (
        (expand("{R}/world/{split}.jsonl", R=R, split=WORLD_SPLITS) if uses_world else [])
        + ([f"{R}/tokenizer"] if pretrained else [])
        + [f"{R}/models/{name}" for name in pretrained + VARIANTS]
        + expand("{R}/scores/{model}.parquet", R=R, model=PRETRAINED)
        + expand("{R}/scores/{model}/shard-{shard}.parquet", R=R, model=PRETRAINED, shard=SHARDS)
        + [f"{R}/detection/tokens.parquet", f"{R}/detection/metrics.json"]
        + expand("{R}/detection/{name}", R=R, name=["inspect.html", "histograms.png", "sweep.csv", "sweep.png"])
        + expand("{R}/counterfactuals/{level}.jsonl", R=R, level=levels)
        + expand("{R}/teacher_logits/{source}.safetensors", R=R, source=caches)
        + expand("{R}/attention/{model}.csv", R=R, model=MODELS)
        + expand("{R}/eval_data/{benchmark}.{kind}", R=R, benchmark=BENCHMARKS, kind=["jsonl", "info.json"])
        + expand("{R}/eval/{model}/{benchmark}.{kind}", R=R, model=MODELS, benchmark=BENCHMARKS,
                 kind=["scores.json", "graded.jsonl"])
        + [f"{R}/eval/{model}/{benchmark}.generations-{k}.jsonl" for model in MODELS for benchmark in BENCHMARKS
           for k in range(generation_shards(benchmark))]
    )
