# Paths, input functions and wildcard constraints shared by every rule.
import os
from functools import cache
from pathlib import Path

from leafpipe.config import CORPUS_ORIGINS, ConfigError, for_seed, given_origins
from leafpipe.config import benchmark_local_files, local_dataset_files
from leafpipe.config import weights_origin as config_weights_origin
from leafpipe.detect.rules import resolved_rules
from leafpipe.execution.plan import WORLD_RESOURCES, failure_report, resources_for, retry_figure
from leafpipe.execution.plan import plan as plan_jobs
from leafpipe.distill.variants import MODEL_LABELS, dataset_of, variant
from leafpipe.distill.variants import VARIANTS as KNOWN_VARIANTS
from leafpipe.stages.specs import tracked_settings

R = config["results"]
SEEDS = config["seeds"]
# Each seed replicates the whole run, pre-training included: every rule but the pooled report
# writes under RS, so it has a {seed} wildcard and its job sees its replicate's config
# (leafpipe.config.for_seed, applied by the adapter). Input functions and params, which Snakemake
# does not format, resolve RS for the job with in_replicate().
RS = f"{R}/seed-{{seed}}"
STAGE = "../scripts/run_stage.py"
ENV = "../envs/leafpipe.yaml"

WORLD_SPLITS = ["teacher_train", "student_train", "distill_train", "test", "test_clean"]
PRETRAINED = ["teacher", "student"]
VARIANTS = config["distill"]["variants"]
MODELS = PRETRAINED + VARIANTS
# The counterfactual levels the variants train on.
LEVELS = sorted({variant(v).level for v in VARIANTS} - {None})
BENCHMARKS = list(config["evaluation"]["benchmarks"])
SHARDS = list(range(config["scoring"]["shards"]))
# Every later rule reads what rule `corpus` writes from the user's corpus.path or the world's split, checked
# row by row (CORPUS_FILE), or a corpus it builds from a shipped benchmark, a hub dataset file or
# a dataset read through `datasets` (corpus.dataset).
BUILT_CORPUS = given_origins(config["corpus"], CORPUS_ORIGINS) not in ([], ["path"])
CORPUS_FILE = (
    None if BUILT_CORPUS else config["corpus"]["path"] or f"{RS}/world/distill_train.jsonl"
)
CORPUS = f"{RS}/corpus/train.jsonl"


def in_replicate(wildcards, path):
    """`path` (under RS) in the job's replicate."""
    return path.replace("{seed}", str(wildcards.seed))


def weights_origin(name):
    """Where a role's weights come from (leafpipe.config.weights_origin)."""
    return config_weights_origin(config, name)


def roles_from(origin):
    """The roles whose weights come from `origin`, as a wildcard pattern (never matching when none)."""
    return "|".join(name for name in PRETRAINED if weights_origin(name) == origin) or "(?!)"


# The four behaviours `detection.rules` (paper or leafpipe) selects, each overridable on its own.
DETECTION_RULES = resolved_rules(config["detection"])
# k of the teacher's top-k cache; null: each kd job runs the teacher itself.
TEACHER_TOPK = config["distill"].get("teacher_topk")


wildcard_constraints:
    role="|".join(PRETRAINED),
    variant="|".join(KNOWN_VARIANTS),
    level="instr|instr_resp",
    dataset="corpus|instr|instr_resp",
    model="|".join(MODEL_LABELS),
    benchmark="[A-Za-z0-9_]+",
    shard=r"\d+",
    seed=r"\d+",


def model_location(name, wildcards):
    """Where a model is read from: the user's folder or hub id, else what the job's replicate made."""
    path = config["models"].get(name, {}).get("path")
    return path or in_replicate(wildcards, f"{RS}/models/{name}")


def tracked_path(location):
    """A location as a job input: only what this run makes or local files can be tracked (not a
    hub id, nor nothing)."""
    return location if location and (location.startswith(R) or Path(location).exists()) else []


def model_input(wildcards, name=None):
    """The model `name` (default: the job's {model}) as a job input."""
    return tracked_path(model_location(name or wildcards.model, wildcards))


def benchmark_input(wildcards):
    """The file a benchmark is read from: a world split, the entry's `path`, or none (its data
    package or the hub)."""
    bench = config["evaluation"]["benchmarks"][wildcards.benchmark]
    if "split" in bench:
        return in_replicate(wildcards, f"{RS}/world/{bench['split']}.jsonl")
    return bench.get("path", [])


def benchmark_local_data(wildcards):
    """The local files a benchmark's rows come from besides `benchmark_input`
    (leafpipe.config.benchmark_local_files), so that editing one reruns its benchmark_data job."""
    return benchmark_local_files(config["evaluation"]["benchmarks"][wildcards.benchmark])


@cache
def replicate_config(seed):
    """The config a replicate's jobs see (leafpipe.config.for_seed), made once per seed."""
    return for_seed(config, int(seed))


def settings_of(stage):
    """A rule's `settings` param, derived from its stage's spec (leafpipe.stages.specs): what the
    stage reads of its job's config, less what changes no output, as canonical JSON. Changing
    one of them reruns the rule (Snakemake's params trigger); nothing else does."""

    def settings(wildcards):
        named = dict(wildcards.items())
        seen = config if "seed" not in named else replicate_config(named["seed"])
        return tracked_settings(stage, seen, named)

    return settings


def generation_shards(benchmark):
    bench = config["evaluation"]["benchmarks"][benchmark]
    return bench.get("shards", config["evaluation"]["shards"])


def generation_files(wildcards, kind):
    """A (model, benchmark)'s generation shards' files of one kind, in shard order."""
    folder = in_replicate(wildcards, f"{RS}/eval/{wildcards.model}")
    return [
        f"{folder}/{wildcards.benchmark}.generations-{k}.{kind}"
        for k in range(generation_shards(wildcards.benchmark))
    ]


def generations(wildcards):
    """A (model, benchmark)'s generation shards, in order: grading reads them all."""
    return generation_files(wildcards, "jsonl")


def generation_infos(wildcards):
    """What each generation shard was made with: the scores name it."""
    return generation_files(wildcards, "info.json")


def dataset_path(wildcards, dataset):
    """The corpus, or a level's counterfactuals as the validity check left them (all of them with
    validity.check off)."""
    return in_replicate(
        wildcards, CORPUS if dataset == "corpus" else f"{RS}/counterfactuals/{dataset}.valid.jsonl"
    )


def distill_data(wildcards):
    return dataset_path(wildcards, dataset_of(wildcards.variant))


def uses_teacher_cache(name):
    return bool(TEACHER_TOPK) and variant(name).objective == "kd"


def teacher_cache(wildcards):
    """The teacher top-k cache a variant reads instead of the teacher (none for sft or without teacher_topk)."""
    if not uses_teacher_cache(wildcards.variant):
        return []
    return in_replicate(
        wildcards, f"{RS}/teacher_logits/{dataset_of(wildcards.variant)}.safetensors"
    )


def replicate_products():
    """Every file and folder one replicate makes, as patterns with {seed}."""
    made = [name for name in PRETRAINED if weights_origin(name) != "path"]
    trained = [name for name in PRETRAINED if weights_origin(name) == "trained"]
    uses_world = (
        bool(trained)
        or (CORPUS_FILE or "").startswith(f"{RS}/world/")
        or any("split" in bench for bench in config["evaluation"]["benchmarks"].values())
    )
    caches = sorted({dataset_of(v) for v in VARIANTS if uses_teacher_cache(v)})
    return (
        (expand("{RS}/world/{split}.jsonl", RS=RS, split=WORLD_SPLITS) if uses_world else [])
        + ([f"{RS}/tokenizer"] if trained else [])
        + expand("{RS}/corpus/{name}", RS=RS, name=["train.jsonl", "info.json", "skipped.parquet"])
        + [f"{RS}/models/{name}" for name in made + VARIANTS]
        + expand("{RS}/scores/{model}.parquet", RS=RS, model=PRETRAINED)
        + expand("{RS}/scores/{model}/shard-{shard}.parquet", RS=RS, model=PRETRAINED, shard=SHARDS)
        + [f"{RS}/detection/tokens.parquet", f"{RS}/detection/metrics.json"]
        + expand(
            "{RS}/detection/{name}",
            RS=RS,
            name=[
                "inspect.html",
                "histograms.png",
                "sweep.csv",
                "sweep.png",
                "variants.csv",
                "by_kind.csv",
            ],
        )
        + expand(
            "{RS}/counterfactuals/{level}.{kind}",
            RS=RS,
            level=LEVELS,
            kind=["jsonl", "valid.jsonl", "validity.json"],
        )
        + expand("{RS}/teacher_logits/{dataset}.safetensors", RS=RS, dataset=caches)
        + expand("{RS}/attention/{model}.csv", RS=RS, model=MODELS)
        + expand(
            "{RS}/eval_data/{benchmark}.{kind}",
            RS=RS,
            benchmark=BENCHMARKS,
            kind=["jsonl", "info.json"],
        )
        + expand(
            "{RS}/eval/{model}/{benchmark}.{kind}",
            RS=RS,
            model=MODELS,
            benchmark=BENCHMARKS,
            kind=["scores.json", "graded.jsonl"],
        )
        + [
            f"{RS}/eval/{model}/{benchmark}.generations-{k}.{kind}"
            for model in MODELS
            for benchmark in BENCHMARKS
            for k in range(generation_shards(benchmark))
            for kind in ("jsonl", "info.json")
        ]
    )


def every_product():
    """Every file and folder this config makes, in every replicate, as targets of `all`.

    Snakemake leaves a deleted intermediate alone while the files made from it are present;
    as targets, a deleted one is rebuilt by a plain rerun, and then only its dependents follow.
    """
    return expand(replicate_products(), seed=SEEDS)


def seed_major(pattern, **values):
    """`pattern` (a path under RS) for each seed in turn, then each combination of `values`: the
    order in which stages.report reads its per-seed inputs."""
    return [path for seed in SEEDS for path in expand(pattern, seed=seed, **values)]


# Each rule's resources (mem_mb in MB, runtime in minutes, gpu count, threads) are the default
# world's (leafpipe.execution.plan.WORLD_RESOURCES), raised to the planner's figures for the config's models; a
# config's `resources: {rule: {...}}` wins, and the GPU counts of distill, teacher_logits and
# generate follow distill.gpus and evaluation.gpus (validate_counterfactuals the teacher's score).
PLAN = plan_jobs(config)
UNFIT = failure_report(PLAN)
if config["hardware"]["check_fit"] and UNFIT:
    raise ConfigError(
        "config: jobs that cannot fit the resources they are given (hardware.check_fit):\n"
        + UNFIT
        + "\n`leafpipe plan CONFIG` prints every job's figures; give the jobs more (resources:, "
        "hardware:) or set hardware.check_fit: false to run anyway"
    )
# The wildcard that tells a rule's jobs apart, as the planner's rows name them.
JOB_KEYS = ("model", "variant", "dataset", "level", "role")


def _resource_spec(rule, wildcards=None):
    """A job's resources: its planner row's (a 70B teacher's score job is not a 1B student's), or
    the rule's for rules the planner has no row for."""
    key = next((getattr(wildcards, name) for name in JOB_KEYS if hasattr(wildcards, name)), None)
    return resources_for(PLAN, config, rule, key)


def job_resources(rule):
    """A rule's `resources:`; memory and runtime grow with each retry (attempt 1, 2, ...), so a
    job killed for running out of either gets more the next time, memory never past the largest
    node's (`hardware.max_mem_mb`)."""
    ceiling = config["hardware"]["max_mem_mb"]
    return {
        "mem_mb": lambda wildcards, attempt: retry_figure(
            _resource_spec(rule, wildcards)["mem_mb"], attempt, ceiling
        ),
        "runtime": lambda wildcards, attempt: retry_figure(
            _resource_spec(rule, wildcards)["runtime"], attempt
        ),
        "gpu": lambda wildcards: _resource_spec(rule, wildcards)["gpu"],
    }


def job_threads(rule):
    return _resource_spec(rule)["threads"]


def gguf_input(role):
    """The GGUF file as a tracked input when it can be found now; else the job's own error says why."""
    from leafpipe.models.pretrained import ModelSourceError, gguf_path

    try:
        return str(gguf_path(config["models"][role]["gguf"]))
    except ModelSourceError:
        return []


def corpus_tokenizer(wildcards):
    """The student's tokenizer, which counts a sample's tokens for corpus.max_tokens: the world's
    when the student is trained here, else the student's own folder (or hub id)."""
    if config["corpus"]["max_tokens"] is None:
        return None
    if weights_origin("student") == "trained":
        return in_replicate(wildcards, f"{RS}/tokenizer")
    return model_location("student", wildcards)


def corpus_held_out(wildcards):
    from leafpipe.evaluation.registry import entry_kind

    kind = config["corpus"].get("benchmark")
    return [
        in_replicate(wildcards, f"{RS}/eval_data/{name}.jsonl")
        for name, bench in config["evaluation"]["benchmarks"].items()
        if kind and entry_kind(bench) == kind
    ]
