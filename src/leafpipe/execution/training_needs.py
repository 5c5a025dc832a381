"""What the jobs that write weights need: training a variant (distill), pre-training a world
model, and importing or deriving one (leafpipe.execution.job_needs has the others). Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leafpipe.distill.variants import variant
from leafpipe.execution import memory
from leafpipe.execution.job_needs import (
    FP32,
    PROCESS_BYTES,
    Need,
    Run,
    cache_rows,
    chunk_tokens,
    counterfactual_samples,
    dtype_bytes,
)
from leafpipe.execution.memory import ModelShape


def _trainable_bytes(shape: ModelShape, lora: bool) -> int:
    """fp32 master weights, gradients and AdamW's two moments: 16 bytes a parameter; with LoRA the
    frozen base (fp32) alone, its adapters being well under 1 %."""
    return memory.weight_bytes(shape, FP32) * (1 if lora else 4)


def _training_activations(
    student: ModelShape, distill: Mapping[str, Any], dtype: int, micro: int
) -> int:
    """One micro-batch of `micro` tokens through the student's decoder, and the loss's logits
    `kd.chunk_tokens` at a time."""
    chunk = chunk_tokens(distill, micro)
    decoder = micro * memory.training_bytes_per_token(
        student, dtype, checkpointing=distill["gradient_checkpointing"]
    )
    return decoder + chunk * memory.logits_bytes_per_token(student, dtype, backward=True)


def _teacher_alongside(
    teacher: ModelShape, distill: Mapping[str, Any], dtype: int, micro: int
) -> int:
    """A teacher run next to the student (`teacher_topk: null`): its weights, its hidden states of a
    micro-batch (no logits: its head runs a chunk at a time) and a chunk's logits."""
    chunk = chunk_tokens(distill, micro)
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
    in memory before writing it), with fsdp also AdamW's moments: each process copies its shards
    of both to host memory and holds them until its file is written (distill.sharded_state)."""
    distill, student, teacher = run.config["distill"], run.shape("student"), run.shape("teacher")
    runs_teacher = variant(name).objective == "kd" and not distill["teacher_topk"]
    if student is None or (runs_teacher and teacher is None):
        return None
    dtype, processes, level = dtype_bytes(gpus), max(gpus, 1), variant(name).level
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
    # On the CPU the training state (the fp32 weights among it), activations and teacher are host
    # memory.
    return Need(0, state + activations + alongside + cache + weights + PROCESS_BYTES, disk, flops)


def pretrain_need(run: Run, role: str, gpus: int) -> Need | None:
    """Pre-training a world model from scratch: the training state and one batch's activations at
    full length, on the CPU in fp32 (or its share of a GPU)."""
    shape = run.shape(role)
    if shape is None:
        return None
    spec = run.config["models"][role]
    train, length = spec["train"], spec["max_position_embeddings"]
    dtype = dtype_bytes(gpus)
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
