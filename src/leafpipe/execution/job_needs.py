"""What one job of each kind needs (GPU memory per GPU, host RAM, disk, FLOPs), from the run's
sizes and its models' shapes (leafpipe.execution.memory): the planner's per-job figures for the
jobs that run a frozen model (scoring, validity, the teacher's cache, attention, generation).
Training and conversion are in leafpipe.execution.training_needs. Torch-free.

The figures are upper bounds where the run's data decide: every sample at the context cutoff
`corpus.max_tokens`, logits at every position.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from leafpipe.config import CORPUS_ORIGINS, given_origins, weights_origin
from leafpipe.evaluation.protocols import max_new_tokens
from leafpipe.execution import memory
from leafpipe.execution.memory import ModelShape
from leafpipe.execution.model_shapes import ROLES, role_shapes
from leafpipe.execution.tensor_parallel import tensor_parallel_size

GIB = 2**30
MB = 10**6  # as Snakemake counts mem_mb
BF16 = 2
FP32 = 4
# Counterfactuals a sample gets per level: one per pruned span, so it depends on the data. Assumed:
# the default world's counts, rounded up (1853 and 2675 for its 600 originals, seed 0).
COUNTERFACTUALS_PER_SAMPLE = {"instr": 4, "instr_resp": 5}
# Tokens of a sample when the config sets no cutoff and its models are not built here (which bound
# their context by max_position_embeddings).
UNBOUNDED_TOKENS = 4096
# Host memory of a job's Python process before any model: the peak of importing torch and
# transformers and reading the job's data (bench/plan_check.py prints the measured one).
PROCESS_BYTES = 1 * GIB
# Columns of a score file per token: ids, positions, offsets and four float32 scores.
SCORE_BYTES_PER_TOKEN = 40


@dataclass(frozen=True)
class Need:
    """What one job needs: bytes per GPU (0 without GPUs), host bytes, disk bytes, and FLOPs (None
    when the config does not say how much work there is)."""

    gpu_bytes: int
    host_bytes: int
    disk_bytes: int
    flops: float | None


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


def _split(shape: ModelShape, gpus: int) -> ModelShape:
    """The layers one GPU holds of a model split layer by layer over `gpus` (the last also holds the
    head, which every per-token figure already counts)."""
    return replace(shape, layers=math.ceil(shape.layers / gpus)) if gpus > 1 else shape


def _frozen_weights(shape: ModelShape, gpus: int) -> tuple[int, int]:
    """(bytes per GPU, host bytes) of a frozen model: bf16 split over the GPUs, fp32 on the CPU;
    loaded through host memory either way."""
    total = memory.weight_bytes(shape, dtype_bytes(gpus))
    return (total // gpus if gpus else 0), total


def _frozen_need(
    shape: ModelShape,
    gpus: int,
    activations: int,
    flops: float | None,
    disk: int,
    host_extra: int = 0,
) -> Need:
    """A frozen model's job: its weights and `activations` on the GPUs, or all of it in host
    memory."""
    per_gpu, host = _frozen_weights(shape, gpus)
    if gpus:
        return Need(per_gpu + activations, host + host_extra + PROCESS_BYTES, disk, flops)
    return Need(0, host + activations + host_extra + PROCESS_BYTES, disk, flops)


def dtype_bytes(gpus: int) -> int:
    """Bytes of a weight or activation: bf16 on GPUs, fp32 on the CPU."""
    return BF16 if gpus else FP32


def chunk_tokens(distill: Mapping[str, Any], tokens: int) -> int:
    """Tokens whose logits exist at once in a loss over `tokens`: `kd.chunk_tokens` (0: all)."""
    return min(distill["kd"]["chunk_tokens"] or tokens, tokens)


def score_need(run: Run, model: str, gpus: int) -> Need | None:
    """One scoring shard: tokens per batch are `scoring.max_tokens`, at least one whole sample (an
    adaptive budget, null, must fit one sample at least)."""
    shape = run.shape(model)
    if shape is None:
        return None
    batch = max(run.config["scoring"]["max_tokens"] or 0, run.tokens)
    activations = batch * memory.scoring_bytes_per_token(_split(shape, gpus), dtype_bytes(gpus))
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
            _split(shape, gpus), dtype_bytes(gpus)
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
    part, dtype = _split(shape, gpus), dtype_bytes(gpus)
    chunk = chunk_tokens(distill, batch_rows)
    activations = batch_rows * memory.inference_bytes_per_token(
        part, dtype, logits=False
    ) + chunk * memory.logits_bytes_per_token(part, dtype, backward=False)
    cache_bytes = memory.topk_cache_host_bytes(rows, k, batch_rows=batch_rows)
    disk = memory.topk_cache_host_bytes(rows, k, batch_rows=0)
    return _frozen_need(
        shape, gpus, activations, 2 * shape.params * rows, disk, host_extra=cache_bytes
    )


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
        _split(shape, gpus), batch, run.tokens, dtype_bytes(gpus)
    )
    tokens = min(settings["samples"], run.samples) * run.tokens
    return _frozen_need(shape, gpus, activations, 2 * shape.params * tokens, 0)


def _longest_new_tokens(evaluation: Mapping[str, Any]) -> int:
    """The longest completion any benchmark asks for: its own limit, else its protocol's, else
    the evaluation's (`protocols.max_new_tokens`, the order generation uses)."""
    return max(max_new_tokens(evaluation, b) for b in evaluation["benchmarks"].values())


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
    the batch's prompts) is left out: benchmark prompts are far shorter than the cutoff.

    Unless the backend is transformers (layers split over all the GPUs), the model is counted
    over the GPUs vLLM can use: `tensor_parallel_size`, the generate stage's choice."""
    shape = run.shape(model)
    if shape is None:
        return None
    evaluation = run.config["evaluation"]
    if evaluation["backend"] != "transformers":
        gpus = tensor_parallel_size(gpus, shape.heads, shape.kv_heads)
    batch, part, dtype = evaluation["batch_size"], _split(shape, gpus), dtype_bytes(gpus)
    length = run.tokens + _longest_new_tokens(evaluation)
    activations = batch * length * memory.kv_cache_bytes_per_token(
        part, dtype
    ) + batch * memory.logits_bytes_per_token(part, dtype, backward=False)
    problems = _benchmark_problems(run)
    flops = None if problems is None else 2 * shape.params * problems * length
    return _frozen_need(shape, gpus, activations, flops, 0)
