"""The run planner: what each job of a config needs (GPU memory per GPU, host RAM, disk, compute)
against what it is given, from the models' configs alone (`leafpipe.execution.memory`), never their weights.

One row per job kind: a rule, and the model where it matters (a 70B teacher's score job is not a
1B student's). The figures are upper bounds where the run's data decide (every sample at the
context cutoff `corpus.max_tokens`, logits at every position); the assumptions the config does not
settle are in `ASSUMPTIONS`, printed under the table.

The workflow reads the same rows (workflow/rules/common.smk): a rule's default `mem_mb` (and, for
GPU jobs, `runtime`) is the planner's figure when it is above the default world's, and with
`hardware.check_fit` a run whose rows fail is refused before any job starts. Torch-free.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from leafpipe.config import CORPUS_ORIGINS, given_origins, weights_origin
from leafpipe.distill.variants import dataset_of, variant
from leafpipe.execution import memory
from leafpipe.execution.memory import ModelShape

SHAPES = Path(__file__).parents[1] / "schema" / "model_shapes.yaml"
GIB = 2**30
MB = 10**6  # as Snakemake counts mem_mb
BF16 = 2
FP32 = 4
ROLES = ("teacher", "student")
# Counterfactuals a sample gets per level: one per pruned span, so it depends on the data. Assumed:
# the default world's counts, rounded up (1853 and 2675 for its 600 originals, seed 0).
COUNTERFACTUALS_PER_SAMPLE = {"instr": 4, "instr_resp": 5}
# Tokens of a sample when the config sets no cutoff and its models are not built here (which bound
# their context by max_position_embeddings).
UNBOUNDED_TOKENS = 4096
# A CPU core's fp32 peak: two 16-lane FMA units (AVX-512) × 2 FLOP × 3 GHz. A job given no GPU
# runs at `threads` × this × hardware.utilisation.
CPU_FLOPS_PER_THREAD = 2 * 16 * 2 * 3e9
# Host memory of a job's Python process before any model: the peak of importing torch and
# transformers and reading the job's data (bench/plan_check.py prints the measured one).
PROCESS_BYTES = 1 * GIB
# Columns of a score file per token: ids, positions, offsets and four float32 scores.
SCORE_BYTES_PER_TOKEN = 40
# Default resources, sized for the default world's tiny models; the planner only raises them.
# grade: two threads, for math-verify workers or sandboxed programs side by side.
WORLD_RESOURCES = {
    "pretrain": {"mem_mb": 4000, "runtime": 30, "gpu": 0, "threads": 1},
    "import_gguf": {"mem_mb": 8000, "runtime": 30, "gpu": 0, "threads": 1},
    "derive_model": {"mem_mb": 8000, "runtime": 30, "gpu": 0, "threads": 1},
    "score": {"mem_mb": 4000, "runtime": 30, "gpu": 0, "threads": 1},
    "attention": {"mem_mb": 4000, "runtime": 30, "gpu": 0, "threads": 1},
    "teacher_logits": {"mem_mb": 4000, "runtime": 60, "gpu": 0, "threads": 1},
    "distill": {"mem_mb": 4000, "runtime": 60, "gpu": 0, "threads": 1},
    "benchmark_data": {"mem_mb": 2000, "runtime": 10, "gpu": 0, "threads": 1},
    "generate": {"mem_mb": 4000, "runtime": 30, "gpu": 0, "threads": 1},
    "grade": {"mem_mb": 4000, "runtime": 30, "gpu": 0, "threads": 2},
    "inspect": {"mem_mb": 2000, "runtime": 10, "gpu": 0, "threads": 1},
    "validate_counterfactuals": {"mem_mb": 4000, "runtime": 30, "gpu": 0, "threads": 1},
}
# Rules whose jobs run every model and may size the teacher's apart (`resources.<rule>.teacher`).
PER_MODEL_RULES = ("score", "attention", "generate")

ASSUMPTIONS = (
    "every sample is as long as corpus.max_tokens (or the built models' context); logits count at every position",
    "counterfactuals per sample: "
    + ", ".join(f"{k} {v}" for k, v in COUNTERFACTUALS_PER_SAMPLE.items())
    + " (one per pruned span: the default world's, rounded up; a run's own are in "
    "counterfactuals/<level>.validity.json)",
    "GPU weights in bf16; a model given several GPUs is split layer by layer (weights / GPUs, one GPU busy at a time)",
    "distill: fp32 master weights, gradients and AdamW states (÷ GPUs with fsdp), bf16 activations of one micro-batch; "
    "each data-parallel process loads the student (fp32) in host memory, the memory-mapped teacher cache counts once",
    "generate: weights, KV cache of batch_size × (prompt + max_new_tokens) with prompts as long as "
    "corpus.max_tokens; the prefill's transient is left out (benchmark prompts are far shorter)",
    "compute: 2·params FLOPs per token forward, 4 with the backward to the inputs (scoring), 6 for training "
    "(8 with gradient checkpointing); at hardware.gpu_tflops × hardware.utilisation, or on the CPU at "
    f"{CPU_FLOPS_PER_THREAD / 1e9:.0f} GFLOP/s per thread × utilisation",
    f"host memory: weights loaded through host memory, plus {PROCESS_BYTES / GIB:.0f} GiB for the process",
)


@dataclass(frozen=True)
class Need:
    """What one job needs: bytes per GPU (0 without GPUs), host bytes, disk bytes, and FLOPs (None
    when the config does not say how much work there is)."""

    gpu_bytes: int
    host_bytes: int
    disk_bytes: int
    flops: float | None


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


@dataclass(frozen=True)
class Run:
    """The sizes of one replicate of a config that the rows read."""

    config: Mapping[str, Any]
    shapes: Mapping[str, ModelShape | None]
    samples: int
    tokens: int

    @property
    def hardware(self) -> Mapping[str, Any]:
        return self.config["hardware"]

    def shape(self, model: str) -> ModelShape | None:
        """A role's shape; a distilled variant has its student's."""
        return self.shapes["teacher" if model == "teacher" else "student"]


@cache
def _shipped_shapes() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(SHAPES.read_text())


def hub_shape(location: str) -> ModelShape | None:
    """A model's shape by its folder's config.json, the shipped table (model_shapes.yaml), or the
    offline hub cache (AutoConfig, which imports transformers: the slowest, so the last). None when
    none has it, or its config is not a decoder's that `memory.model_shape` reads (no Llama-style
    keys)."""
    shipped = _shipped_shapes().get(location)
    config_json = Path(location) / "config.json"
    try:
        if config_json.is_file():
            return memory.model_shape(json.loads(config_json.read_text()))
        if shipped is not None:
            return ModelShape(**shipped)
        from transformers import AutoConfig

        return memory.model_shape(AutoConfig.from_pretrained(location, local_files_only=True))
    except (OSError, ValueError, KeyError, TypeError):  # not cached, or not a config of that kind
        return None


def gguf_shape(spec: Mapping[str, Any]) -> ModelShape | None:
    """A GGUF file's shape from its metadata (the `<arch>.` keys llama.cpp writes); a tied head is
    a file without `output.weight`. None when the file or the `gguf` package is absent."""
    try:
        from gguf import GGUFReader

        from leafpipe.models.pretrained import ModelSourceError, gguf_path

        reader = GGUFReader(str(gguf_path(spec)))
    except (ImportError, ModelSourceError, OSError):
        return None
    arch = reader.fields["general.architecture"].contents()

    def field(name: str) -> int:
        return int(reader.fields[f"{arch}.{name}"].contents())

    heads, hidden = field("attention.head_count"), field("embedding_length")
    return ModelShape(
        layers=field("block_count"),
        hidden=hidden,
        intermediate=field("feed_forward_length"),
        heads=heads,
        kv_heads=field("attention.head_count_kv"),
        head_dim=hidden // heads,
        vocab=len(reader.fields["tokenizer.ggml.tokens"].data),
        tied_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
    )


def built_shape(spec: Mapping[str, Any], vocab: int) -> ModelShape:
    """A model pre-trained here from its `models:` entry (leafpipe.models.pretrain.build_model: untied,
    head_dim = hidden / heads)."""
    return ModelShape(
        layers=spec["num_layers"],
        hidden=spec["hidden_size"],
        intermediate=spec["intermediate_size"],
        heads=spec["num_heads"],
        kv_heads=spec["num_kv_heads"],
        head_dim=spec["hidden_size"] // spec["num_heads"],
        vocab=vocab,
        tied_embeddings=False,
    )


def _made_config(config: Mapping[str, Any], role: str) -> Path:
    """The config.json of a role's model once this run has made it (the first replicate's: every
    replicate's has the same shape)."""
    return Path(config["results"]) / f"seed-{config['seeds'][0]}" / "models" / role / "config.json"


def role_shapes(config: Mapping[str, Any]) -> dict[str, ModelShape | None]:
    """Each role's shape by where its weights come from. An imported or derived model's is read from
    its folder once made (reading a GGUF file's metadata takes seconds, and the Snakefile is read
    again by every job), else from the GGUF file, or its source's with the kept layers (None when
    that source's is unknown)."""
    shapes: dict[str, ModelShape | None] = {}
    sources = {role: weights_origin(config, role) for role in ROLES}
    for role in ROLES:
        spec, made = config["models"][role], _made_config(config, role)
        if sources[role] in ("gguf", "derive") and made.is_file():
            shapes[role] = memory.model_shape(json.loads(made.read_text()))
        elif sources[role] == "path":
            shapes[role] = hub_shape(spec["path"])
        elif sources[role] == "gguf":
            shapes[role] = gguf_shape(spec["gguf"])
        elif sources[role] == "trained":
            shapes[role] = built_shape(spec, config["tokenizer"]["vocab_size"])
    for role in ROLES:
        if sources[role] == "derive" and role not in shapes:
            derive = config["models"][role]["derive"]
            base = shapes.get(derive["from"])
            layers = (
                derive["layers"] if isinstance(derive["layers"], int) else len(derive["layers"])
            )
            shapes[role] = None if base is None else replace(base, layers=layers)
    return shapes


def run_sizes(config: Mapping[str, Any]) -> Run:
    """Samples in the corpus and tokens per sample (the cutoff, else the built models' context)."""
    given = given_origins(config["corpus"], CORPUS_ORIGINS)
    samples = config["corpus"]["limit"] if given else config["world"]["n_distill_train"]
    tokens = config["corpus"]["max_tokens"]
    if tokens is None:
        built = [
            config["models"][r]["max_position_embeddings"]
            for r in ROLES
            if weights_origin(config, r) == "trained"
        ]
        tokens = max(built) if built else UNBOUNDED_TOKENS
    return Run(config, role_shapes(config), samples, tokens)


def _default_gpus(config: Mapping[str, Any], rule: str) -> int:
    """GPU counts that follow other settings: distill's `distill.gpus` (teacher_logits at most one of
    them), generate's `evaluation.gpus`, and validity's the teacher's score jobs' (the same frozen
    teacher, forward only: the same placement)."""
    follows = {
        "distill": lambda: config["distill"]["gpus"],
        "teacher_logits": lambda: min(config["distill"]["gpus"], 1),
        "generate": lambda: config["evaluation"]["gpus"],
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


def _split(shape: ModelShape, gpus: int) -> ModelShape:
    """The layers one GPU holds of a model split layer by layer over `gpus` (the last also holds the
    head, which every per-token figure already counts)."""
    return replace(shape, layers=math.ceil(shape.layers / gpus)) if gpus > 1 else shape


def _frozen_weights(shape: ModelShape, gpus: int) -> tuple[int, int]:
    """(bytes per GPU, host bytes) of a frozen model: bf16 split over the GPUs, fp32 on the CPU;
    loaded through host memory either way."""
    total = memory.weight_bytes(shape, _dtype(gpus))
    return (total // gpus if gpus else 0), total


def _frozen_need(
    shape: ModelShape,
    gpus: int,
    activations: int,
    flops: float | None,
    disk: int,
    host_extra: int = 0,
) -> Need:
    """A frozen model's job: its weights and `activations` on the GPUs, or all of it in host memory."""
    per_gpu, host = _frozen_weights(shape, gpus)
    if gpus:
        return Need(per_gpu + activations, host + host_extra + PROCESS_BYTES, disk, flops)
    return Need(0, host + activations + host_extra + PROCESS_BYTES, disk, flops)


def _dtype(gpus: int) -> int:
    return BF16 if gpus else FP32


def _chunk(distill: Mapping[str, Any], tokens: int) -> int:
    """Tokens whose logits exist at once in a loss over `tokens`: `kd.chunk_tokens` (0: all)."""
    return min(distill["kd"]["chunk_tokens"] or tokens, tokens)


def score_need(run: Run, model: str, gpus: int) -> Need | None:
    """One scoring shard: tokens per batch are `scoring.max_tokens`, at least one whole sample (an
    adaptive budget, null, must fit one sample at least)."""
    shape = run.shape(model)
    if shape is None:
        return None
    batch = max(run.config["scoring"]["max_tokens"] or 0, run.tokens)
    activations = batch * memory.scoring_bytes_per_token(_split(shape, gpus), _dtype(gpus))
    tokens = run.samples * run.tokens / run.config["scoring"]["shards"]
    disk = int(tokens * SCORE_BYTES_PER_TOKEN)
    return _frozen_need(shape, gpus, activations, 4 * shape.params * tokens, disk)


def counterfactual_samples(run: Run, level: str) -> int:
    return run.samples * (1 + COUNTERFACTUALS_PER_SAMPLE[level])


def validity_need(run: Run, level: str, gpus: int) -> Need | None:
    """Loss forwards of the teacher (and with `validity.student` the student, one after the other)
    over the originals and a level's counterfactuals, at `validity.max_tokens` per batch."""
    roles = ("teacher", "student") if run.config["validity"]["student"] else ("teacher",)
    budget = run.config["validity"]["max_tokens"] or run.config["scoring"]["max_tokens"] or 0
    tokens = counterfactual_samples(run, level) * run.tokens
    needs = []
    for role in roles:
        shape = run.shape(role)
        if shape is None:
            return None
        activations = max(budget, run.tokens) * memory.inference_bytes_per_token(
            _split(shape, gpus), _dtype(gpus)
        )
        needs.append(_frozen_need(shape, gpus, activations, 2 * shape.params * tokens, 0))
    return Need(
        max(n.gpu_bytes for n in needs),
        max(n.host_bytes for n in needs),
        0,
        sum(n.flops for n in needs),
    )


def cache_rows(run: Run, source: str) -> int:
    """Trained tokens of a data file (every token of every sample: an upper bound)."""
    samples = run.samples if source == "corpus" else counterfactual_samples(run, source)
    return samples * run.tokens


def teacher_logits_need(run: Run, source: str, gpus: int) -> Need | None:
    """The teacher's forward over a data file, `distill.micro_batch` samples a batch, and its top-k
    cache built in host memory and written to disk."""
    shape = run.shape("teacher")
    if shape is None:
        return None
    distill = run.config["distill"]
    k, rows, batch_rows = (
        distill["teacher_topk"],
        cache_rows(run, source),
        distill["micro_batch"] * run.tokens,
    )
    part, dtype = _split(shape, gpus), _dtype(gpus)
    chunk = _chunk(distill, batch_rows)
    activations = batch_rows * memory.inference_bytes_per_token(
        part, dtype, logits=False
    ) + chunk * memory.logits_bytes_per_token(part, dtype, backward=False)
    cache_bytes = memory.topk_cache_host_bytes(rows, k, batch_rows=batch_rows)
    disk = memory.topk_cache_host_bytes(rows, k, batch_rows=0)
    return _frozen_need(
        shape, gpus, activations, 2 * shape.params * rows, disk, host_extra=cache_bytes
    )


def _trainable_bytes(shape: ModelShape, lora: bool) -> int:
    """fp32 master weights, gradients and AdamW's two moments: 16 bytes a parameter; with LoRA the
    frozen base (fp32) alone, its adapters being well under 1 %."""
    return memory.weight_bytes(shape, FP32) * (1 if lora else 4)


def _training_activations(
    student: ModelShape, distill: Mapping[str, Any], dtype: int, micro: int
) -> int:
    """One micro-batch of `micro` tokens through the student's decoder, and the loss's logits
    `kd.chunk_tokens` at a time."""
    chunk = _chunk(distill, micro)
    decoder = micro * memory.training_bytes_per_token(
        student, dtype, checkpointing=distill["gradient_checkpointing"]
    )
    return decoder + chunk * memory.logits_bytes_per_token(student, dtype, backward=True)


def _teacher_alongside(
    teacher: ModelShape, distill: Mapping[str, Any], dtype: int, micro: int
) -> int:
    """A teacher run next to the student (`teacher_topk: null`): its weights, its hidden states of a
    micro-batch (no logits: its head runs a chunk at a time) and a chunk's logits."""
    chunk = _chunk(distill, micro)
    return (
        memory.weight_bytes(teacher, dtype)
        + micro * memory.inference_bytes_per_token(teacher, dtype, logits=False)
        + chunk * memory.logits_bytes_per_token(teacher, dtype, backward=False)
    )


def distill_need(run: Run, name: str, gpus: int) -> Need | None:
    """One variant's training job: per GPU its share of the trainable state, one micro-batch's
    activations and a teacher copy on every process when the kd objective runs the teacher itself.
    In host memory: per process the student loaded in fp32 and any teacher; once the teacher's
    top-k cache, which safetensors memory-maps (file pages, shared by the job's processes); and
    once what a checkpoint brings to host memory: the fp32 weights (safetensors serialises a shard
    in memory before writing it), with fsdp also AdamW's moments, gathered whole on process 0."""
    distill, student, teacher = run.config["distill"], run.shape("student"), run.shape("teacher")
    runs_teacher = variant(name).objective == "kd" and not distill["teacher_topk"]
    if student is None or (runs_teacher and teacher is None):
        return None
    dtype, processes, level = _dtype(gpus), max(gpus, 1), variant(name).level
    micro = distill["micro_batch"] * run.tokens
    state = _trainable_bytes(student, distill["lora"] is not None)
    activations = _training_activations(student, distill, dtype, micro)
    tokens = (
        distill["epochs"]
        * (run.samples if level is None else counterfactual_samples(run, level))
        * run.tokens
    )
    flops = (8 if distill["gradient_checkpointing"] else 6) * student.params * tokens
    alongside = _teacher_alongside(teacher, distill, dtype, micro) if runs_teacher else 0
    flops += 2 * teacher.params * tokens if runs_teacher else 0
    cache = (
        memory.topk_cache_host_bytes(
            cache_rows(run, level or "corpus"), distill["teacher_topk"], batch_rows=0
        )
        if variant(name).objective == "kd" and distill["teacher_topk"]
        else 0
    )
    weights = memory.weight_bytes(student, FP32)
    # Checkpoints of fp32 weights and AdamW's moments, the previous one kept until the next is
    # written, and the final model (fp32).
    disk = 2 * 3 * weights + weights
    if gpus:
        sharded = distill["fsdp"] and gpus > 1
        state_per_gpu = state // processes if sharded else state
        teacher_host = memory.weight_bytes(teacher, dtype) if runs_teacher else 0
        moments = 2 * weights if sharded and distill["lora"] is None else 0
        host = processes * (weights + teacher_host + PROCESS_BYTES) + cache + weights + moments
        return Need(state_per_gpu + activations + alongside, host, disk, flops)
    # On the CPU the training state (the fp32 weights among it), activations and teacher are host memory.
    return Need(0, state + activations + alongside + cache + weights + PROCESS_BYTES, disk, flops)


def attention_need(run: Run, model: str, gpus: int) -> Need | None:
    """The eager-attention forward over `attention.samples`: a batch of `attention.batch_size`
    samples within `attention.max_tokens` (an adaptive budget, null, must fit one sample)."""
    shape = run.shape(model)
    if shape is None:
        return None
    settings = run.config["attention"]
    budget = settings["max_tokens"]
    batch = min(settings["batch_size"], max(1, budget // run.tokens)) if budget else 1
    activations = memory.attention_analysis_bytes(
        _split(shape, gpus), batch, run.tokens, _dtype(gpus)
    )
    tokens = min(settings["samples"], run.samples) * run.tokens
    return _frozen_need(shape, gpus, activations, 2 * shape.params * tokens, 0)


def _longest_new_tokens(evaluation: Mapping[str, Any]) -> int:
    return max(
        b.get("max_new_tokens", evaluation["max_new_tokens"])
        for b in evaluation["benchmarks"].values()
    )


def _benchmark_problems(run: Run) -> int | None:
    """Problems × completions over the evaluation's benchmarks; None when a benchmark without
    `limit` (nor a world split) makes the count unknown here."""
    benches, world = run.config["evaluation"]["benchmarks"].values(), run.config["world"]
    if any("limit" not in b and "split" not in b for b in benches):
        return None
    sizes = {
        "test": world["n_test"],
        "test_clean": world["n_test"],
        "distill_train": world["n_distill_train"],
        "teacher_train": world["n_teacher_train"],
        "student_train": world["n_student_train"],
    }
    return sum(b.get("limit", sizes.get(b.get("split"), 0)) * b.get("n", 1) for b in benches)


def generate_need(run: Run, model: str, gpus: int) -> Need | None:
    """Batched generation: weights, the KV cache of a batch grown to prompt + the longest
    `max_new_tokens`, and the last position's logits. The prefill's transient (one layer's MLP over
    the batch's prompts) is left out: benchmark prompts are far shorter than the cutoff."""
    shape = run.shape(model)
    if shape is None:
        return None
    evaluation = run.config["evaluation"]
    batch, part, dtype = evaluation["batch_size"], _split(shape, gpus), _dtype(gpus)
    length = run.tokens + _longest_new_tokens(evaluation)
    activations = batch * length * memory.kv_cache_bytes_per_token(
        part, dtype
    ) + batch * memory.logits_bytes_per_token(part, dtype, backward=False)
    problems = _benchmark_problems(run)
    flops = None if problems is None else 2 * shape.params * problems * length
    return _frozen_need(shape, gpus, activations, flops, 0)


def pretrain_need(run: Run, role: str, gpus: int) -> Need | None:
    """Pre-training a world model from scratch: the training state and one batch's activations at
    full length, on the CPU in fp32 (or its share of a GPU)."""
    shape = run.shape(role)
    if shape is None:
        return None
    spec = run.config["models"][role]
    train, length = spec["train"], spec["max_position_embeddings"]
    dtype = _dtype(gpus)
    batch = train["batch_size"] * length
    activations = batch * (
        memory.training_bytes_per_token(shape, dtype, checkpointing=False)
        + memory.logits_bytes_per_token(shape, dtype, backward=True)
    )
    state = _trainable_bytes(shape, lora=False)
    samples = run.config["world"][f"n_{role}_train"]
    flops = 6 * shape.params * train["epochs"] * samples * length
    disk = memory.weight_bytes(shape, FP32)
    if gpus:
        return Need(
            state + activations, memory.weight_bytes(shape, FP32) + PROCESS_BYTES, disk, flops
        )
    return Need(0, state + activations + PROCESS_BYTES, disk, flops)


def conversion_need(run: Run, role: str, gpus: int) -> Need | None:
    """import_gguf and derive_model: a model read into fp32 on the CPU and saved (its source's when
    derived, which is read whole before the kept layers are taken)."""
    derive = run.config["models"][role].get("derive")
    shape = run.shape(derive["from"] if derive else role)
    if shape is None:
        return None
    out = run.shape(role)
    weights = memory.weight_bytes(shape, FP32)
    disk = memory.weight_bytes(out, FP32) if out else weights
    return Need(0, weights + disk + PROCESS_BYTES, disk, None)


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
            f"given no GPU: {hours:.1f} h on the CPU > runtime {runtime} min (give it GPUs: resources gpu)"
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
