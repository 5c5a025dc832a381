"""The settings of a distillation run: the loss (`KDSpec`), LoRA (`LoraSpec`) and the run
(`DistillSpec`).

Kept apart from the trainer and free of torch and transformers, so that code which only reads
or checks a config (leafpipe.config, the planner) can build and validate a spec without loading
the training stack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from leafpipe.spec_fields import known_fields

# How counterfactuals enter an epoch (`leafpipe.distill.data`): each one a sample of its own
# (`all`, the paper's mixed file) or one drawn per original (`draw_one`).
ALL, DRAW_ONE = "all", "draw_one"
MODES = (ALL, DRAW_ONE)

KD_KINDS = ("forward_kl", "reverse_kl", "jsd")
# How a teacher cached as its top-k log-probabilities (`leafpipe.distill.topk`) enters the loss.
TOPK_MODES = ("renormalised", "tail")
HEAD_PRECISIONS = ("auto", "bf16", "fp32")
# Who computes the distillation loss: leafpipe's chunked loss (`leafpipe.distill.kd_loss`) or
# Liger-Kernel's fused linear JSD on a CUDA GPU (`leafpipe.distill.liger_loss`).
KD_BACKENDS = ("chunked", "liger")
OBJECTIVES = ("kd", "ce")
SCHEDULES = ("cosine", "linear", "constant")
KEEP = ("best", "last")


def check_head_precision(value: str) -> None:
    if value not in HEAD_PRECISIONS:
        raise ValueError(f"unknown head_precision {value!r}; expected one of {HEAD_PRECISIONS}")


@dataclass(frozen=True)
class KDSpec:
    """Which divergence, at which temperature, in chunks of how many response tokens.

    `kind`: "forward_kl" KL(p_T || p_S), "reverse_kl" KL(p_S || p_T), or "jsd", the generalised
    JSD of GKD with mixture M = beta * p_T + (1 - beta) * p_S (`leafpipe.distill.kd_loss`). Both
    distributions are softened by `temperature` and the loss is scaled by temperature**2. `beta`
    lies strictly in (0, 1) and only matters for "jsd". `chunk_tokens`: trained tokens per chunk;
    0 puts them all in one chunk (the arithmetic of the chunked path at the memory cost of the
    full-logit one). A chunk holds about three [chunk_tokens, V] fp32 buffers at its peak (four
    for "jsd"), on top of the head's [V, H] weight gradient, which both paths must produce. The
    default of 256 keeps them at 0.375 GiB for V = 128256, below the 1 GiB weight gradient of a
    2048-wide head, and the chunked peak under a quarter of the full-logit one; each head matmul
    ([256, H] x [H, V]) stays large. On CPU, 512 and 1024 saved 9-11 % of the CPU time at 1.3x and
    1.8x the peak memory (docs/performance.md, "Distillation loss"). `head_precision`: the dtype
    of the student head's matrix products, "bf16", "fp32" (the head's own dtype) or "auto", bf16
    on a CUDA device (`leafpipe.distill.kd_loss`). `topk_mode` matters only with a cached top-k
    teacher (`leafpipe.distill.topk`): "renormalised", the teacher renormalised over its k tokens,
    or "tail", k + 1 categories, the k tokens and one bucket for the mass outside them. Both
    approximate the full-vocabulary divergence. `backend`: "chunked", the loss above, or "liger",
    Liger-Kernel's fused linear JSD on a CUDA GPU (`leafpipe.distill.liger_loss`).
    """

    kind: str = "forward_kl"
    temperature: float = 1.0
    beta: float = 0.5
    chunk_tokens: int = 256
    head_precision: str = "auto"
    topk_mode: str = "renormalised"
    backend: str = "chunked"

    def __post_init__(self) -> None:
        if self.kind not in KD_KINDS:
            raise ValueError(f"unknown KD kind {self.kind!r}; expected one of {KD_KINDS}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be positive and finite, got {self.temperature}")
        if not 0.0 < self.beta < 1.0:
            raise ValueError(
                f"beta must lie strictly between 0 and 1, got {self.beta} "
                "(at 0 or 1 the JSD is identically 0; use forward_kl or reverse_kl for those "
                "limits)"
            )
        if (
            isinstance(self.chunk_tokens, bool)
            or not isinstance(self.chunk_tokens, int)
            or self.chunk_tokens < 0
        ):
            raise ValueError(
                f"chunk_tokens must be an integer >= 0 (0 = all at once), got {self.chunk_tokens!r}"
            )
        check_head_precision(self.head_precision)
        if self.topk_mode not in TOPK_MODES:
            raise ValueError(f"unknown topk_mode {self.topk_mode!r}; expected one of {TOPK_MODES}")
        if self.backend not in KD_BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; expected one of {KD_BACKENDS}")


@dataclass(frozen=True)
class LoraSpec:
    """Low-rank adapters (peft) instead of training every weight; see `distill`."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    # Names of the linear layers that get adapters (Llama, Qwen2, Mistral, Gemma naming), or
    # "all-linear" for every linear layer but the output head.
    target_modules: tuple[str, ...] | str = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError("lora: r must be >= 1, alpha > 0 and dropout in [0, 1)")
        if not self.target_modules:
            raise ValueError("lora.target_modules must name at least one layer")


# Keys of the config's `distill` section that are the workflow's, not the trainer's: which
# variants to train, on how many GPUs, and whether a cache stands in for the teacher (the stage
# hands the trainer the cache itself).
NOT_FOR_TRAINER = ("variants", "gpus", "teacher_topk")


@dataclass(frozen=True)
class DistillSpec:
    """Training settings; `config/config.yaml`'s `distill` section documents each one.

    Dataclass defaults follow the paper's public code where it states them; the config schema
    holds the defaults of the pipeline's own runs.
    """

    objective: str = "kd"  # "kd": loss to the teacher (spec.kd); "ce": cross-entropy (sft)
    # λ: the weight of a counterfactual token (`all`) or of the counterfactual term (`draw_one`).
    # `all` with λ = 1 is the paper's code: plain KD over the mixed file, every token alike. A
    # summary of the paper writes μ·KL(orig) + (1−μ)·KL(cf) (its "λ" is our μ), KL a token mean:
    # `draw_one` is that form scaled by 1/μ with λ = (1−μ)/μ; `all` gives the counterfactuals the
    # share λN_cf / (N_orig + λN_cf) of a step, i.e. λ = (1−μ)/μ · N_orig/N_cf. λ = 0 leaves the
    # counterfactuals out: kd on the originals (docs/training-scheme.md).
    lam: float = 1.0
    counterfactuals: str = (
        ALL  # "all": each one a sample every epoch; "draw_one": one drawn per original
    )
    kd: KDSpec = field(default_factory=KDSpec)
    epochs: int = 5
    global_batch: int = (
        32  # items per optimiser step (samples with `all`, groups with `draw_one`) ...
    )
    micro_batch: int = 32  # ... reached by accumulating micro-batches of this many items
    lr: float = 1e-5
    schedule: str = "cosine"  # after warm-up: cosine or linear decay to 0, or constant
    warmup_ratio: float = 0.03  # fraction of all steps spent warming up linearly
    weight_decay: float = 0.0  # applied to matrices only, not to norms or biases
    max_grad_norm: float = 1.0  # gradient clipping; 0 disables it
    gradient_checkpointing: bool = False
    fsdp: bool = (
        False  # with several processes: shard the student (FSDP2) instead of replicating it
    )
    packing: bool = False  # share rows between a micro-batch's samples (batching.pack)
    lora: LoraSpec | None = None
    val_fraction: float = 0.0  # share of groups held out (by source id) for a validation loss
    keep: str = "last"  # the weights returned and saved: the last epoch's, or the best val loss
    checkpoint_every: int = 50  # optimiser steps between resumable checkpoints
    seed: int = 0
    log_every: int = 10  # steps between log lines
    # Minutes a data-parallel process waits in one collective before the job fails (NCCL's own
    # default, 10, can pass while process 0 writes a large checkpoint to a slow file system).
    collective_timeout_min: int = 120

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        self._check_ranges()
        self._check_choices()

    def _check_ranges(self) -> None:
        if self.lam < 0 or self.lr <= 0 or self.max_grad_norm < 0 or self.weight_decay < 0:
            raise ValueError("lam, max_grad_norm and weight_decay must be >= 0, lr > 0")
        counts = (
            self.epochs,
            self.global_batch,
            self.micro_batch,
            self.log_every,
            self.checkpoint_every,
            self.collective_timeout_min,
        )
        if min(counts) < 1:
            raise ValueError(
                "epochs, global_batch, micro_batch, log_every, checkpoint_every and "
                "collective_timeout_min must be >= 1"
            )
        if self.global_batch % self.micro_batch:
            raise ValueError(
                f"distill.global_batch ({self.global_batch}) must be a multiple of "
                f"distill.micro_batch ({self.micro_batch}): an optimiser step accumulates "
                "global_batch / micro_batch micro-batches"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def _check_choices(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.counterfactuals not in MODES:
            raise ValueError(
                f"counterfactuals must be one of {MODES}, got {self.counterfactuals!r}"
            )
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {KEEP}, got {self.keep!r}")
        if self.keep == "best" and self.val_fraction == 0:
            raise ValueError(
                "distill.keep: best needs a validation set; set distill.val_fraction > 0"
            )
        if self.fsdp and self.lora is not None:
            raise ValueError(
                "distill.fsdp shards a fully trained student; LoRA trains small adapters, "
                "which need no sharding: set lora: null or fsdp: false"
            )

    @property
    def accumulation(self) -> int:
        return self.global_batch // self.micro_batch

    @classmethod
    def from_config(
        cls, settings: Mapping[str, Any], *, objective: str, seed: int
    ) -> "DistillSpec":
        """The spec of a config's `distill` section. The keys that are not the trainer's
        (`NOT_FOR_TRAINER`) are left out; any other key it does not know is an error, never
        dropped silently. `objective` and `seed` are the variant's and the replicate's."""
        nested = ("kd", "lora")
        flat = {k: v for k, v in settings.items() if k not in nested}
        lora = settings.get("lora")
        if lora:
            modules = lora.get("target_modules", LoraSpec.target_modules)
            lora = LoraSpec(
                **{
                    **lora,
                    "target_modules": modules if isinstance(modules, str) else tuple(modules),
                }
            )
        return cls(
            objective=objective,
            seed=seed,
            kd=KDSpec(**settings.get("kd", {})),
            lora=lora or None,
            **known_fields(cls, flat, not_for=NOT_FOR_TRAINER),
        )
