"""The run planner: what each job of a config needs (GPU memory per GPU, host RAM, disk, compute)
against what it is given, from the models' configs alone (`leafpipe.execution.memory`), never
their weights.

One row per job kind: a rule, and the model where it matters (a 70B teacher's score job is not a
1B student's). The figures are upper bounds where the run's data decide (every sample at the
context cutoff `corpus.max_tokens`, logits at every position); the assumptions the config does not
settle are in `ASSUMPTIONS`, printed under the table.

The workflow reads the same rows (workflow/rules/common.smk): a rule's default `mem_mb` (and, for
GPU jobs, `runtime`) is the planner's figure when it is above the default world's, and with
`hardware.check_fit` a run whose rows fail is refused before any job starts. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leafpipe.config import weights_origin
from leafpipe.distill.variants import dataset_of, variant
from leafpipe.execution.job_needs import (
    COUNTERFACTUALS_PER_SAMPLE,
    GIB,
    MB,
    PROCESS_BYTES,
    Need,
    Run,
    attention_need,
    generate_need,
    run_sizes,
    score_need,
    teacher_logits_need,
    validity_need,
)
from leafpipe.execution.model_shapes import ROLES
from leafpipe.execution.training_needs import conversion_need, distill_need, pretrain_need

# A CPU core's fp32 peak: two 16-lane FMA units (AVX-512) × 2 FLOP × 3 GHz. A job given no GPU
# runs at `threads` × this × hardware.utilisation.
CPU_FLOPS_PER_THREAD = 2 * 16 * 2 * 3e9


def _cpu_job(mem_mb: int, runtime: int, threads: int = 1) -> dict[str, int]:
    """A default world job's resources (`runtime` in minutes): its tiny models need no GPU."""
    return {"mem_mb": mem_mb, "runtime": runtime, "gpu": 0, "threads": threads}


# Default resources, sized for the default world's tiny models; the planner only raises them.
# grade: two threads, for math-verify workers or sandboxed programs side by side.
WORLD_RESOURCES = {
    "pretrain": _cpu_job(mem_mb=4000, runtime=30),
    "import_gguf": _cpu_job(mem_mb=8000, runtime=30),
    "derive_model": _cpu_job(mem_mb=8000, runtime=30),
    "score": _cpu_job(mem_mb=4000, runtime=30),
    "attention": _cpu_job(mem_mb=4000, runtime=30),
    "teacher_logits": _cpu_job(mem_mb=4000, runtime=60),
    "distill": _cpu_job(mem_mb=4000, runtime=60),
    "benchmark_data": _cpu_job(mem_mb=2000, runtime=10),
    "generate": _cpu_job(mem_mb=4000, runtime=30),
    # Its GPU follows evaluation.lm_eval.device; a task group runs longer than one benchmark.
    "lm_eval": _cpu_job(mem_mb=4000, runtime=60),
    "grade": _cpu_job(mem_mb=4000, runtime=30, threads=2),
    "inspect": _cpu_job(mem_mb=2000, runtime=10),
    "validate_counterfactuals": _cpu_job(mem_mb=4000, runtime=30),
}
# Rules whose jobs run every model and may size the teacher's apart (`resources.<rule>.teacher`).
PER_MODEL_RULES = ("score", "attention", "generate")

ASSUMPTIONS = (
    "every sample is as long as corpus.max_tokens (or the built models' context); "
    "logits count at every position",
    "counterfactuals per sample: "
    + ", ".join(f"{k} {v}" for k, v in COUNTERFACTUALS_PER_SAMPLE.items())
    + " (one per pruned span: the default world's, rounded up; a run's own are in "
    "counterfactuals/<level>.validity.json)",
    "GPU weights in bf16; a model given several GPUs is split layer by layer "
    "(weights / GPUs, one GPU busy at a time)",
    "distill: fp32 master weights, gradients and AdamW states (÷ GPUs with fsdp), "
    "bf16 activations of one micro-batch; "
    "each data-parallel process loads the student (fp32) in host memory, "
    "the memory-mapped teacher cache counts once",
    "generate: weights, KV cache of batch_size × (prompt + max_new_tokens) with prompts as long as "
    "corpus.max_tokens; the prefill's transient is left out (benchmark prompts are far shorter)",
    "compute: 2·params FLOPs per token forward, 4 with the backward to the inputs (scoring), "
    "6 for training (8 with gradient checkpointing); "
    "at hardware.gpu_tflops × hardware.utilisation, or on the CPU at "
    f"{CPU_FLOPS_PER_THREAD / 1e9:.0f} GFLOP/s per thread × utilisation",
    "host memory: weights loaded through host memory, "
    f"plus {PROCESS_BYTES / GIB:.0f} GiB for the process",
)


@dataclass(frozen=True)
class Row:
    """One job kind: what it needs against what it is given; `unknown` when a model's shape is."""

    rule: str
    key: str  # the wildcard value that picks the job (model, variant, source, level or role)
    model: str
    gpus: int
    threads: int
    mem_mb: int  # given (the config's, else the default)
    runtime: int  # given, minutes
    need: Need | None
    hours: float | None  # wall-clock hours at the assumed rate
    failures: tuple[str, ...]

    @property
    def slow(self) -> bool:
        """Whether the estimated hours pass the runtime given: not refused (the estimate assumes a
        utilisation, and a retry doubles the runtime), but worth a look."""
        return self.hours is not None and self.hours * 60 > self.runtime

    @property
    def job(self) -> str:
        return f"{self.rule} ({self.key})"

    @property
    def status(self) -> str:
        if self.failures:
            return "FAIL"
        if self.need is None:
            return "unknown"
        return "ok, slow" if self.slow else "ok"


def _default_gpus(config: Mapping[str, Any], rule: str) -> int:
    """GPU counts that follow other settings: distill's `distill.gpus` (teacher_logits at most one
    of them), generate's `evaluation.gpus`, lm_eval's one unless its device is the CPU, and
    validity's the teacher's score jobs' (the same frozen teacher, forward only: the same
    placement)."""
    follows = {
        "distill": lambda: config["distill"]["gpus"],
        "teacher_logits": lambda: min(config["distill"]["gpus"], 1),
        "generate": lambda: config["evaluation"]["gpus"],
        "lm_eval": lambda: int((config["evaluation"].get("lm_eval") or {}).get("device") != "cpu"),
        "validate_counterfactuals": lambda: given_resources(config, "score", "teacher")["gpu"],
    }
    return follows[rule]() if rule in follows else WORLD_RESOURCES[rule]["gpu"]


def explicit_resources(config: Mapping[str, Any], rule: str, key: str | None) -> dict[str, Any]:
    """What the config's `resources:` itself sets for a job: the rule's entry, and for the teacher's
    jobs of a per-model rule its `teacher:` entry over it."""
    given = dict(config["resources"].get(rule, {}))
    teacher = given.pop("teacher", {})
    return {**given, **teacher} if key == "teacher" and rule in PER_MODEL_RULES else given


def given_resources(config: Mapping[str, Any], rule: str, key: str | None = None) -> dict[str, int]:
    """A job's resources before the planner: the default world's, GPU counts that follow other
    settings, then the config's `resources:`."""
    defaults = {**WORLD_RESOURCES[rule], "gpu": _default_gpus(config, rule)}
    return {**defaults, **explicit_resources(config, rule, key)}


NEEDS = {
    "pretrain": pretrain_need,
    "import_gguf": conversion_need,
    "derive_model": conversion_need,
    "score": score_need,
    "validate_counterfactuals": validity_need,
    "teacher_logits": teacher_logits_need,
    "distill": distill_need,
    "attention": attention_need,
    "generate": generate_need,
}


def job_kinds(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(rule, wildcard value, model) of every job kind the config runs; a distilled variant's
    attention and generation are its student's shape and share the student's row."""
    variants = config["distill"]["variants"]
    levels = sorted({variant(v).level for v in variants} - {None})
    kinds = []
    for role in ROLES:
        source = weights_origin(config, role)
        rule = {"trained": "pretrain", "gguf": "import_gguf", "derive": "derive_model"}.get(source)
        if rule:
            kinds.append((rule, role, role))
    kinds += [("score", role, role) for role in ROLES]
    if config["validity"]["check"]:
        kinds += [("validate_counterfactuals", level, "teacher") for level in levels]
    if config["distill"]["teacher_topk"]:
        sources = sorted({dataset_of(v) for v in variants if variant(v).objective == "kd"})
        kinds += [("teacher_logits", source, "teacher") for source in sources]
    kinds += [("distill", variant, "student") for variant in variants]
    kinds += [(rule, role, role) for rule in ("attention", "generate") for role in ROLES]
    return kinds


def _hours(run: Run, need: Need, gpus: int, threads: int) -> float | None:
    """Wall-clock hours: a layer-split model keeps one GPU busy at a time; data-parallel training
    (distill) divides its FLOPs over the GPUs, which the caller passes as `gpus`."""
    if need.flops is None:
        return None
    utilisation = run.hardware["utilisation"]
    rate = run.hardware["gpu_tflops"] * 1e12 if gpus else threads * CPU_FLOPS_PER_THREAD
    return need.flops / (rate * utilisation * max(gpus, 1)) / 3600


def _failures(
    run: Run,
    row_gpus: int,
    runtime: int,
    mem_mb: int,
    need: Need,
    hours: float | None,
    published: bool,
) -> tuple[str, ...]:
    """Why a job cannot run as given: GPU memory per GPU over `hardware.gpu_memory_gb`, host memory
    over its `mem_mb` or any node's (`hardware.max_mem_mb`), or, for a `published` model (a `path`:
    real-size, unlike the models built or imported here for CPU runs), given no GPU while the CPU
    could not finish it within its runtime."""
    hardware, out = run.hardware, []
    gpu_limit = hardware["gpu_memory_gb"] * GIB
    if row_gpus and need.gpu_bytes > gpu_limit:
        out.append(
            f"GPU memory {need.gpu_bytes / GIB:.1f} GiB per GPU > {hardware['gpu_memory_gb']} GiB "
            f"(hardware.gpu_memory_gb) with {row_gpus} GPU(s)"
        )
    host_mb = math.ceil(need.host_bytes / MB)
    if host_mb > mem_mb:
        out.append(f"host memory {host_mb} MB > mem_mb {mem_mb}")
    if hardware["max_mem_mb"] is not None and host_mb > hardware["max_mem_mb"]:
        out.append(f"host memory {host_mb} MB > hardware.max_mem_mb {hardware['max_mem_mb']}")
    if published and not row_gpus and hours is not None and hours * 60 > runtime:
        out.append(
            f"given no GPU: {hours:.1f} h on the CPU > runtime {runtime} min "
            "(give it GPUs: resources gpu)"
        )
    return tuple(out)


# A GPU job's default time limit is its planned hours times this: the estimate assumes a
# utilisation the job may not reach, and a job stopped at its limit loses the work since its last
# checkpoint and waits in the queue again.
RUNTIME_HEADROOM = 1.5


def planned_resources(
    given: Mapping[str, int], explicit: Mapping[str, Any], need: Need | None, hours: float | None
) -> dict[str, int]:
    """A job's resources with the planner's figures as defaults: mem_mb the planned host memory,
    runtime (GPU jobs) the planned wall time with `RUNTIME_HEADROOM`, each never below the default
    world's and never over a value the config gives (`explicit`: the config's own entries for this
    job)."""
    spec = dict(given)
    if need is not None and "mem_mb" not in explicit:
        spec["mem_mb"] = max(spec["mem_mb"], math.ceil(need.host_bytes / MB))
    if hours is not None and spec["gpu"] and "runtime" not in explicit:
        spec["runtime"] = max(spec["runtime"], math.ceil(hours * 60 * RUNTIME_HEADROOM))
    return spec


def plan_row(run: Run, rule: str, key: str, model: str) -> Row:
    given = given_resources(run.config, rule, key)
    gpus = given["gpu"]
    need = NEEDS[rule](run, key, gpus)
    hours = (
        None
        if need is None
        else _hours(run, need, gpus if rule == "distill" else min(gpus, 1), given["threads"])
    )
    spec = planned_resources(given, explicit_resources(run.config, rule, key), need, hours)
    published = weights_origin(run.config, "teacher" if model == "teacher" else "student") == "path"
    failures = (
        ()
        if need is None
        else _failures(run, gpus, spec["runtime"], spec["mem_mb"], need, hours, published)
    )
    return Row(
        rule,
        key,
        model,
        gpus,
        spec["threads"],
        spec["mem_mb"],
        spec["runtime"],
        need,
        hours,
        failures,
    )


def plan(config: Mapping[str, Any]) -> list[Row]:
    """A row per job kind of a validated config (`leafpipe.config.load_config`)."""
    run = run_sizes(config)
    return [plan_row(run, rule, key, model) for rule, key, model in job_kinds(config)]


def resources_for(
    rows: list[Row], config: Mapping[str, Any], rule: str, key: str | None
) -> dict[str, int]:
    """A job's resources as the workflow asks for them: its row's when the planner has one (a
    variant's attention and generation jobs use the student's), else the rule's given ones."""
    if rule in PER_MODEL_RULES and key not in ROLES:
        key = "student"
    row = next((r for r in rows if (r.rule, r.key) == (rule, key)), None)
    if row is None:
        return given_resources(config, rule, key)
    return {"mem_mb": row.mem_mb, "runtime": row.runtime, "gpu": row.gpus, "threads": row.threads}


def retry_figure(value: int, attempt: int, ceiling: int | None = None) -> int:
    """A retry's mem_mb or runtime: `value` × the attempt number (a job killed for running out of
    either gets more the next time), never past `ceiling` (None: no ceiling)."""
    grown = value * attempt
    return min(grown, ceiling) if ceiling is not None else grown


def _gib(value: int) -> str:
    return f"{value / GIB:.1f}"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table, then the assumptions."""
    head = (
        "job",
        "GPUs",
        "GPU GiB/GPU",
        "host GiB",
        "mem_mb",
        "disk GiB",
        "hours",
        "GPU-h",
        "runtime min",
        "status",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        need = row.need
        cells = (
            row.job,
            str(row.gpus),
            _gib(need.gpu_bytes) if need and row.gpus else "–",
            _gib(need.host_bytes) if need else "?",
            str(row.mem_mb),
            _gib(need.disk_bytes) if need else "?",
            f"{row.hours:.2f}" if row.hours is not None else "?",
            f"{row.hours * row.gpus:.2f}" if row.hours is not None and row.gpus else "–",
            str(row.runtime),
            row.status,
        )
        lines.append("| " + " | ".join(cells) + " |")
    notes = "\n".join(f"- {a}" for a in ASSUMPTIONS)
    return "\n".join(lines) + "\n\nAssumptions:\n" + notes


def failure_report(rows: list[Row]) -> str:
    """One line per failing row, naming the job and its numbers."""
    return "\n".join(f"{row.job}: {'; '.join(row.failures)}" for row in rows if row.failures)
