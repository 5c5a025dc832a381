"""Causal attention distillation, stage 2 of LeaF, and its baselines: one trainer, one loop.

Original samples x and their counterfactuals x \\ A (a confounder span removed) train the
student, teacher and student seeing the same input, with a per-token loss ℓ on the trained
response tokens: a distillation loss (`objective="kd"`: forward KL, reverse KL or JSD to the
teacher, `leafpipe.distill.kd_loss`) or plain cross-entropy (`objective="ce"`, the `sft` baseline, which
needs no teacher). Two schemes (`DistillSpec.counterfactuals`):

- `all` (the paper's mixed file): every original and every counterfactual is a sample of its
  own each epoch, and a step's loss is the token mean with weight λ on counterfactual tokens,
      L = (Σ_orig ℓ + λ Σ_cf ℓ) / (N_orig + λ N_cf)
  over the step's trained tokens; λ = 1 is the paper's plain KD over the mixed file.
- `draw_one`: each original with one counterfactual drawn per epoch, and
      L = Σ_orig ℓ / N_orig + λ Σ_cf ℓ / N_cf,
  each term the token mean over its own samples of the step.

Both count tokens over the whole optimiser step, so gradient accumulation gives exactly the
gradient of one big batch. The variants differ only in data: `sft` and `kd` train on originals
alone (no counterfactuals, so the λ term is absent), `leaf_instr` and `leaf_instr_resp` on
originals with their counterfactuals. docs/training-scheme.md compares the schemes with the paper.

Training state lives in a work folder (docs/data-schemas.md, "Distillation checkpoints") so a
killed job resumes where it stopped and ends with the same weights, bit for bit on a CPU, as a
run that was never interrupted: weights, optimiser state, step, position in the epoch, RNG states
and the metrics so far are saved every `checkpoint_every` steps and at each epoch end, and the
batch order of an epoch is a function of (seed, epoch) alone, so it is recomputed, not stored.

A step whose loss or gradient is not finite (NaN or inf: a diverging run, an overflow, a broken
weight) updates nothing: its gradients are dropped, the learning-rate schedule and the RNG move
on as after any step, and it is counted (`non_finite` in metrics.csv, `non_finite_steps` in
training.json and in the resumable state). Every process takes the same decision. Once more
than half of the steps so far were skipped, the run stops with an error rather than pass as
trained.

Started as several processes (torchrun; `distill.gpus` > 1), each trains its share of every
step and the gradients are combined so that the run trains what one process would, with the
student replicated or, with `fsdp`, sharded (`leafpipe.distill.parallel`).

This module holds the settings and the trainer; the groups, split and batches are in
`leafpipe.distill.data`, the work folder and the final model folder in
`leafpipe.distill.checkpoints`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import transformers
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.distill import parallel
from leafpipe.distill.checkpoints import (
    BEST,
    LAST,
    LOSS_SUMS,
    METRICS,
    STATE,
    TRAINING,
    Metrics,
    SavedState,
    TrainingState,
    clear_work,
    load_state,
    quiet_saves,
    rng_state,
    run_fingerprint,
    save_state,
)
from leafpipe.distill.data import (
    ALL,
    MODES,
    ORIGINAL_REF,
    DistillGroup,
    Step,
    encode_groups,
    epoch_plan,
    n_trained,
    rank_share,
    sample_of,
    validation_plan,
    validation_split,
)
from leafpipe.distill.kd_loss import (
    KDSpec,
    TopK,
    ce_loss_sum,
    kd_loss_sum,
    output_head,
    response_hidden,
)
from leafpipe.distill.teacher_cache import TeacherCache
from leafpipe.files.atomic import atomic_path, write_json
from leafpipe.text.batching import Batch, collate, pack
from leafpipe.text.templates import EncodedSample

log = logging.getLogger(__name__)

OBJECTIVES = ("kd", "ce")
# The run stops when more than half of its steps so far were skipped as non-finite, judged from
# this step on (or from the last step of a shorter run): one bad step at the very start is no
# majority yet.
NON_FINITE_JUDGED_FROM = 4
SCHEDULES = ("cosine", "linear", "constant")
KEEP = ("best", "last")


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
        if self.lam < 0 or self.lr <= 0 or self.max_grad_norm < 0 or self.weight_decay < 0:
            raise ValueError("lam, max_grad_norm and weight_decay must be >= 0, lr > 0")
        if (
            min(
                self.epochs,
                self.global_batch,
                self.micro_batch,
                self.log_every,
                self.checkpoint_every,
                self.collective_timeout_min,
            )
            < 1
        ):
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
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.counterfactuals not in MODES:
            raise ValueError(
                f"counterfactuals must be one of {MODES}, got {self.counterfactuals!r}"
            )
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {KEEP}, got {self.keep!r}")
        if self.keep == "best" and self.val_fraction == 0:
            raise ValueError("keep: best needs a validation set; set val_fraction > 0")
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
        """The spec of a config's `distill` section; keys the trainer does not read are ignored."""
        nested = {"kd", "lora", "objective", "seed"}
        names = {f.name for f in fields(cls)} - nested
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
            **{k: v for k, v in settings.items() if k in names},
        )


def term_weights(n_orig: int, n_cf: int, lam: float, mode: str) -> tuple[float, float]:
    """What a step's original and counterfactual loss sums are multiplied by before backward.

    `n_orig`, `n_cf`: the step's trained tokens of each kind. `all`: 1 and λ over
    N_orig + λ N_cf (one weighted token mean); `draw_one`: 1 / N_orig and λ / N_cf (a mean per
    term). Counting the whole step, not a micro-batch, is what makes accumulation exact.
    """
    if mode == ALL:
        total = (n_orig + lam * n_cf) or 1.0
        return 1.0 / total, lam / total
    return 1.0 / max(n_orig, 1), lam / max(n_cf, 1)


def combined_loss(sums: Mapping[str, float], lam: float, mode: str) -> float:
    """The loss L of loss sums and token counts (`LOSS_SUMS`): what `term_weights` trains.

    NaN when there are no trained tokens; a set without counterfactuals has no cf term.
    """
    if mode == ALL:
        total = sums["orig_tokens"] + lam * sums["cf_tokens"]
        return (sums["orig"] + lam * sums["cf"]) / total if total else math.nan
    orig, cf = _terms(sums)
    return orig if math.isnan(cf) else orig + lam * cf


def lr_at(step: int, total_steps: int, spec: DistillSpec) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warm-up, then `spec.schedule`."""
    warmup = round(spec.warmup_ratio * total_steps)
    if step < warmup:
        return spec.lr * (step + 1) / (warmup + 1)
    if spec.schedule == "constant":
        return spec.lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    if spec.schedule == "linear":
        return spec.lr * (1.0 - progress)
    return spec.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


# --- models and tokenizers ------------------------------------------------------------------


def check_tokenizers(
    student_tokenizer: PreTrainedTokenizerBase, teacher_tokenizer: PreTrainedTokenizerBase | None
) -> None:
    """Token-level distillation compares distributions over the same token ids.

    Supported: the same tokenizer (equal vocabularies), or a teacher whose vocabulary extends
    the student's with every student token at the same id (one model family, the larger model
    with added tokens). The teacher then reads the student's token ids as they are.
    """
    if teacher_tokenizer is None:
        return
    student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    moved = [t for t, i in student_vocab.items() if teacher_vocab.get(t) != i]
    if moved:
        examples = ", ".join(repr(t) for t in sorted(moved)[:5])
        raise ValueError(
            f"teacher and student tokenizers differ: {len(moved)} of the student's "
            f"{len(student_vocab)} tokens are missing from the teacher's vocabulary or have "
            f"another id there (e.g. {examples}). Token-level distillation supports two pairs: "
            "the same tokenizer, or a teacher whose vocabulary extends the student's with the "
            "same ids (one model family, e.g. Qwen2.5-7B-Instruct → Qwen2.5-0.5B-Instruct). "
            "Choose a teacher and student of one family."
        )


def _head_rows(model: PreTrainedModel) -> int:
    return model.get_output_embeddings().weight.shape[0]


def _check_heads(
    student: PreTrainedModel, teacher: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase
) -> None:
    for role, model in (("student", student), ("teacher", teacher)):
        if model is not None and _head_rows(model) < len(tokenizer):
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the {role} model's output layer "
                f"only {_head_rows(model)}; use the tokenizer the models were trained with"
            )
    if teacher is not None and _head_rows(teacher) < _head_rows(student):
        raise ValueError(
            f"the teacher's output layer ({_head_rows(teacher)} tokens) is smaller than the "
            f"student's ({_head_rows(student)}); the teacher's vocabulary must be at least the "
            "student's"
        )


def _require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ImportError(
            "distill.lora is set but peft is not installed; install it with "
            "pip install 'leafpipe[lora]', or set distill.lora: null to train every weight"
        ) from None


def _wrap_lora(student: PreTrainedModel, lora: LoraSpec) -> Any:
    _require_peft()
    from peft import LoraConfig, get_peft_model

    modules = (
        lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
    )
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(student, config)


def _checkpointing(model: PreTrainedModel) -> None:
    # transformers 5 renamed the switch; older versions only have the first name.
    enable = (
        getattr(model, "activation_checkpointing_enable", None)
        or model.gradient_checkpointing_enable
    )
    enable()
    model.config.use_cache = False


def _allow_tf32(device: torch.device) -> None:
    """On CUDA, let fp32 matrix products use TF32 (inputs rounded to a 10-bit mantissa, fp32 sums).

    Under bf16 autocast the student's layers and the bf16 teacher make no fp32 products; the ones
    left are the student head's three per chunk with `kd.head_precision: fp32`, which without TF32
    run at a small fraction of the tensor cores' rate (kd_loss: bf16 products are faster still).
    TF32 keeps fp32's range and sums, so it is the fp32 setting's precision on a GPU. A flag of the
    whole process, which here is the distill job's own.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.fp32_precision = "tf32"


def _optimizer(
    params: Sequence[tuple[str, torch.nn.Parameter]], spec: DistillSpec
) -> torch.optim.AdamW:
    """AdamW decaying matrices only, as nanoGPT does: norm gains and biases are not decayed."""
    return torch.optim.AdamW(
        [
            {"params": [p for _, p in params if p.dim() >= 2], "weight_decay": spec.weight_decay},
            {"params": [p for _, p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=spec.lr,
    )


# --- the trainer ----------------------------------------------------------------------------


class _Trainer:
    def __init__(
        self,
        teacher: PreTrainedModel | None,
        student: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        groups: Sequence[DistillGroup],
        spec: DistillSpec,
        work_dir: Path,
        on_step: Callable[[int, dict[str, Any]], None] | None,
        teacher_cache: TeacherCache | None = None,
    ):
        self.spec, self.work, self.tokenizer, self.on_step = spec, work_dir, tokenizer, on_step
        # With a cache the teacher is never loaded: its top-k log-probs stand in for it.
        self.cache = teacher_cache if spec.objective == "kd" else None
        # One process, or one of several data-parallel ones (leafpipe.distill.parallel).
        self.rank, self.world, self.device = parallel.setup(
            timedelta(minutes=spec.collective_timeout_min)
        )
        _allow_tf32(self.device)
        self.main = self.rank == 0
        # Padding is masked out everywhere, so any id works; Llama tokenizers have no pad token.
        pad = tokenizer.pad_token_id
        self.pad_id = tokenizer.eos_token_id if pad is None else pad
        self.encoded = encode_groups(tokenizer, groups)
        self.train_idx, self.val_idx = validation_split(groups, spec.val_fraction)
        if not self.train_idx:
            raise ValueError(f"val_fraction {spec.val_fraction} holds out all {len(groups)} groups")
        if spec.val_fraction > 0 and not self.val_idx:
            log.warning(
                "val_fraction %.3g holds out none of %d groups: no validation loss",
                spec.val_fraction,
                len(groups),
            )
        self.steps_per_epoch = len(self._plan(1))
        self.total_steps = spec.epochs * self.steps_per_epoch
        if self.cache is not None:
            self.cache.check(groups, self.encoded)
            if self.cache.temperature != spec.kd.temperature:
                raise ValueError(
                    f"teacher cache {self.cache.path} holds log-probs at temperature "
                    f"{self.cache.temperature}, distill.kd.temperature is {spec.kd.temperature}"
                )
            if self.cache.vocab_size != _head_rows(student):
                raise ValueError(
                    f"teacher cache {self.cache.path} was built for a vocabulary of "
                    f"{self.cache.vocab_size}, the student's output layer has {_head_rows(student)}"
                )
        uses_teacher = spec.objective == "kd" and self.cache is None
        self.fingerprint = run_fingerprint(
            asdict(spec),
            self.val_idx,
            self.encoded,
            (student, teacher) if uses_teacher else (student,),
            extra=self.cache.identity() if self.cache is not None else None,
        )

        torch.manual_seed(spec.seed)  # LoRA initialisation and dropout
        self.teacher = None
        if uses_teacher:
            # Frozen, and in bf16 on a GPU: it only ever runs forward (inference mode, below).
            teacher = teacher.eval().requires_grad_(False).to(self.device)
            self.teacher = teacher.to(torch.bfloat16) if self.device.type == "cuda" else teacher
        self.peft = _wrap_lora(student, spec.lora) if spec.lora else None
        # Forward passes go through the plain transformers model; peft injected its adapters
        # into that model's layers, so they run there too.
        self.student = (self.peft.get_base_model() if self.peft else student).to(self.device)
        if spec.gradient_checkpointing:
            _checkpointing(self.student)
        # With several processes and fsdp, each holds a shard of the student (data_parallel).
        self.sharded = (
            parallel.ShardedStudent(self.student, self.device)
            if spec.fsdp and self.world > 1
            else None
        )
        self.params = [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]
        self.optimizer = _optimizer(self.params, spec)
        if self.world > 1:  # weights are equal everywhere; dropout masks should not be
            torch.manual_seed(spec.seed + 1_000_003 * self.rank)

    # The student keeps fp32 master weights; on a GPU its forward runs under bf16 autocast.
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _plan(self, epoch: int) -> list[Step]:
        spec = self.spec
        return epoch_plan(
            self.encoded,
            self.train_idx,
            epoch,
            seed=spec.seed,
            global_batch=spec.global_batch,
            micro_batch=spec.micro_batch,
            lam=spec.lam,
            mode=spec.counterfactuals,
        )

    # -- losses --

    def _loss_sum(self, samples: Sequence[EncodedSample]) -> torch.Tensor:
        """Sum of the per-token loss over the trained tokens of `samples` (fp32 scalar).

        Only the decoders run under autocast; the chunked losses apply the student's head in the
        dtype `kd.head_precision` chooses (bf16 on a GPU by default), the teacher's in its own, and
        do their softmax arithmetic in fp32 (`leafpipe.distill.kd_loss`).
        """
        if self.spec.packing:
            batch, order = pack(samples, self.pad_id)
            samples = [samples[i] for i in order]  # the order of the trained tokens
        else:
            batch = collate(samples, self.pad_id)
        batch = batch.to(self.device)
        target: Any = None
        if self.spec.objective == "kd" and self.cache is not None:
            target = self.cache.gather(samples).to(self.device)
        elif self.spec.objective == "kd":
            with torch.inference_mode():
                target = response_hidden(
                    self.teacher, batch.input_ids, batch.attention_mask, batch.position_ids
                )
        if self.sharded is not None:  # the whole student side inside one FSDP forward
            return self.sharded(self._student_loss, batch, target)
        return self._student_loss(self.student, batch, target)

    def _student_loss(self, student: PreTrainedModel, batch: Batch, target: Any) -> torch.Tensor:
        """The student's side of `_loss_sum`: `target` is the teacher's hidden states, its cached
        top-k (`TopK`), or None for cross-entropy."""
        with self._autocast():
            hidden = response_hidden(
                student, batch.input_ids, batch.attention_mask, batch.position_ids
            )
        head = output_head(student)
        if self.spec.objective == "ce":
            return ce_loss_sum(
                hidden,
                head,
                batch.input_ids,
                batch.target_mask,
                self.spec.kd.chunk_tokens,
                self.spec.kd.head_precision,
            )
        if isinstance(target, TopK):
            return kd_loss_sum(
                hidden, head, None, None, batch.target_mask, self.spec.kd, teacher_topk=target
            )
        # kd_loss_sum reads the teacher's (inference-mode) hidden states under no_grad, detached:
        # they never enter the autograd graph, so they need no clone.
        return kd_loss_sum(
            hidden, head, target, output_head(self.teacher), batch.target_mask, self.spec.kd
        )

    def _passes(self, step: Step) -> list[tuple[list[EncodedSample], str | None]]:
        """This process's forward passes over its share of `step`: (samples, "orig" or "cf").

        Each micro-batch makes a pass over its originals and one over its counterfactuals, as
        the two kinds are weighted apart. Sharded, every process makes the same passes in the
        same order, since each pass gathers weights collectively: a process with nothing for a
        pass runs it on the step's first sample with term None (weight 0).
        """
        mb = self.spec.micro_batch
        if self.sharded is None:
            shares, mine = [rank_share(step, self.rank, self.world, mb)], 0
        else:
            shares, mine = (
                [rank_share(step, r, self.world, mb) for r in range(self.world)],
                self.rank,
            )
        filler = [sample_of(self.encoded, step[0][0][0])]
        passes: list[tuple[list[EncodedSample], str | None]] = []
        for k in range(max(len(share) for share in shares)):
            micro = shares[mine][k] if k < len(shares[mine]) else []
            planned = {
                _term(ref)
                for share in shares
                if k < len(share)
                for item in share[k]
                for ref in item
            }
            for term in ("orig", "cf"):
                if term in planned:
                    samples = [
                        sample_of(self.encoded, ref)
                        for item in micro
                        for ref in item
                        if _term(ref) == term
                    ]
                    passes.append((samples, term) if samples else (filler, None))
        return passes

    def _train_step(self, step: Step) -> dict[str, Any]:
        """One optimiser step over this process's share of it; returns the step's loss terms and counts."""
        every = [ref for micro in step for item in micro for ref in item]
        # Normalisers first: each kind's weight counts the trained tokens of the whole step (on
        # every process), so summed gradients are the whole step's.
        n_orig = sum(
            n_trained(sample_of(self.encoded, ref)) for ref in every if _term(ref) == "orig"
        )
        n_cf = sum(n_trained(sample_of(self.encoded, ref)) for ref in every if _term(ref) == "cf")
        w_orig, w_cf = term_weights(n_orig, n_cf, self.spec.lam, self.spec.counterfactuals)
        weight = {"orig": w_orig, "cf": w_cf, None: 0.0}
        # FSDP averages gradients over the processes; scaling by their number makes it a sum.
        scale = self.world if self.sharded is not None else 1
        sums = {"orig": 0.0, "cf": 0.0}
        for samples, term in self._passes(step):
            # One backward pass per forward: only one graph is alive at a time.
            loss = self._loss_sum(samples)
            (loss * (weight[term] * scale)).backward()
            if term is not None:
                sums[term] += loss.item()
        if self.sharded is None:
            parallel.sum_gradients([p for _, p in self.params])
        sum_orig, sum_cf = parallel.sum_values([sums["orig"], sums["cf"]], self.device)
        out = dict(orig=sum_orig, orig_tokens=n_orig, cf=sum_cf, cf_tokens=n_cf)
        # max_norm=inf measures the norm for the metrics and scales gradients by exactly 1.
        limit = self.spec.max_grad_norm or math.inf
        grad_norm = parallel.local_value(
            torch.nn.utils.clip_grad_norm_([p for _, p in self.params], limit)
        )
        # The norm covers every gradient entry of the step (summed over the processes, or of the
        # whole sharded model), so it is finite only when all of them are.
        bad = not (math.isfinite(sum_orig) and math.isfinite(sum_cf) and math.isfinite(grad_norm))
        # All processes must skip together, or their weights would part (and FSDP would hang).
        bad = parallel.sum_values([float(bad)], self.device)[0] > 0
        if not bad:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {**out, "grad_norm": grad_norm, "non_finite": bad}

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """The training loss on the held-out groups' samples (`validation_plan`), normalised over
        all of them."""
        self.student.eval()
        spec = self.spec
        held_out = validation_plan(
            self.encoded, self.val_idx, seed=spec.seed, lam=spec.lam, mode=spec.counterfactuals
        )
        totals = dict.fromkeys(LOSS_SUMS, 0.0)
        for samples, term in self._passes(held_out):
            loss = self._loss_sum(samples).item()
            if term is not None:
                totals[term] += loss
                totals[f"{term}_tokens"] += sum(n_trained(s) for s in samples)
        totals = dict(
            zip(LOSS_SUMS, parallel.sum_values([totals[k] for k in LOSS_SUMS], self.device))
        )
        self.student.train()
        orig, cf = _terms(totals)
        return dict(
            val_loss=self._total(totals),
            val_orig=orig,
            val_cf=cf,
            val_tokens=int(totals["orig_tokens"] + totals["cf_tokens"]),
        )

    def _total(self, sums: Mapping[str, float]) -> float:
        return combined_loss(sums, self.spec.lam, self.spec.counterfactuals)

    # -- checkpoints --

    def _save_model(self, name: str) -> None:
        """save_pretrained of the student (its LoRA adapter, with LoRA) and the tokenizer.

        Written by process 0; every process takes part when the student is sharded.
        """
        full = {"state_dict": self.sharded.model_state()} if self.sharded is not None else {}
        if not self.main:
            return
        with atomic_path(self.work / name, directory=True) as tmp, quiet_saves():
            (self.peft or self.student).save_pretrained(tmp, **full)
            self.tokenizer.save_pretrained(tmp)

    def _save_state(self, state: TrainingState, started: float) -> None:
        """Every process takes part (its RNG states are saved too); process 0 writes."""
        rngs = parallel.gather_objects(rng_state())
        if self.sharded is not None:
            trainable, optimizer = (
                self.sharded.model_state(),
                self.sharded.optimizer_state(self.optimizer),
            )
        else:
            trainable, optimizer = dict(self.params), self.optimizer.state_dict()
        if self.main:
            save_state(
                self.work,
                state,
                fingerprint=self.fingerprint,
                trainable=trainable,
                optimizer=optimizer,
                elapsed=state.elapsed + time.monotonic() - started,
                rng=rngs,
            )
        parallel.barrier()

    def _restore(self, saved: SavedState) -> None:
        """Weights and optimiser state from a checkpoint (every process reads all of it)."""
        if self.sharded is not None:
            self.sharded.load_model_state(saved.trainable)
            self.sharded.load_optimizer_state(self.optimizer, saved.optimizer)
            return
        with torch.no_grad():
            named = dict(self.params)
            for name, value in saved.trainable.items():
                named[name].copy_(value)
        self.optimizer.load_state_dict(saved.optimizer)

    def _restore_best(self) -> None:
        """Load the weights saved in best/ into the (unsharded) student."""
        path = self.work / BEST
        if self.peft is not None:
            from peft.utils import load_peft_weights, set_peft_model_state_dict

            set_peft_model_state_dict(
                self.peft, load_peft_weights(str(path), device=str(self.device))
            )
            return
        best = type(self.student).from_pretrained(str(path), dtype=torch.float32)
        self.student.load_state_dict(best.state_dict())

    # -- the loop --

    def run(self) -> PreTrainedModel:
        spec = self.spec
        self.work.mkdir(parents=True, exist_ok=True)
        saved = load_state(self.work, fingerprint=self.fingerprint, rank=self.rank)
        parallel.barrier()  # every process has read the state before process 0 clears it
        if saved is None:
            if self.main:
                clear_work(self.work)
            state = TrainingState()
        else:
            self._restore(saved)
            state = saved.state
            state.resumed.append(state.step)
            log.info(
                "resuming from %s at step %d (epoch %d, step %d of it)",
                self.work / STATE,
                state.step,
                state.epoch,
                state.position,
            )
        log.info(
            "distill (%s): %d training groups, %d held out; %d epochs × %d steps of %d groups "
            "(%d micro-batches of %d); device %s; %d process(es)%s",
            spec.objective,
            len(self.train_idx),
            len(self.val_idx),
            spec.epochs,
            self.steps_per_epoch,
            spec.global_batch,
            spec.accumulation,
            spec.micro_batch,
            self.device,
            self.world,
            ", the student sharded over them (FSDP2)" if self.sharded is not None else "",
        )
        started = time.monotonic()
        metrics = Metrics(
            self.work, state.history, state.step if state.resumed else None, write=self.main
        )
        progress = tqdm(
            total=self.total_steps,
            initial=state.step,
            desc=f"distill {spec.objective}",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not self.main,
        )
        self.student.train()
        try:
            while state.epoch <= spec.epochs:
                steps = self._plan(state.epoch)
                while state.position < len(steps):
                    lr = lr_at(state.step, self.total_steps, spec)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    out = self._train_step(steps[state.position])
                    state.step += 1
                    state.position += 1
                    if out["non_finite"]:
                        state.non_finite_steps += 1
                    else:  # a skipped step trained nothing: the epoch's totals leave it out
                        for key in LOSS_SUMS:
                            state.sums[key] += out[key]
                    orig, cf = _terms(out)
                    row = dict(
                        kind="step",
                        epoch=state.epoch,
                        step=state.step,
                        lr=lr,
                        loss=self._total(out),
                        loss_orig=orig,
                        loss_cf=cf,
                        grad_norm=out["grad_norm"],
                        non_finite=int(out["non_finite"]),
                        tokens_orig=out["orig_tokens"],
                        tokens_cf=out["cf_tokens"],
                        elapsed_s=round(state.elapsed + time.monotonic() - started, 3),
                    )
                    metrics.add(row)
                    state.history = metrics.rows
                    progress.update()
                    progress.set_postfix(
                        epoch=state.epoch, loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}"
                    )
                    if state.step % spec.log_every == 0 or state.step == self.total_steps:
                        log.info(
                            "step %d/%d epoch %d lr %.3e loss %.5f loss_orig %.5f loss_cf %.5f "
                            "grad_norm %.3f",
                            state.step,
                            self.total_steps,
                            state.epoch,
                            lr,
                            row["loss"],
                            orig,
                            cf,
                            out["grad_norm"],
                        )
                    if out["non_finite"] and self.main:
                        log.warning(
                            "step %d/%d epoch %d: non-finite loss or gradient (loss_orig %s, "
                            "loss_cf %s, grad_norm %s): no update; %d of %d steps so far skipped",
                            state.step,
                            self.total_steps,
                            state.epoch,
                            orig,
                            cf,
                            out["grad_norm"],
                            state.non_finite_steps,
                            state.step,
                        )
                    self._check_non_finite(state)
                    if state.step % spec.checkpoint_every == 0:
                        self._save_state(state, started)
                    if self.on_step is not None:
                        self.on_step(state.step, row)
                self._end_epoch(state, metrics, started)
        finally:
            progress.close()
            metrics.close()
        return self._finish(state, started)

    def _check_non_finite(self, state: TrainingState) -> None:
        """Stop a run most of whose steps were skipped: it has not trained (every process raises)."""
        judged = state.step >= min(NON_FINITE_JUDGED_FROM, self.total_steps)
        if judged and 2 * state.non_finite_steps > state.step:
            raise RuntimeError(
                f"distill ({self.spec.objective}): {state.non_finite_steps} of the {state.step} optimiser "
                "steps so far had a non-finite (NaN or inf) loss or gradient and updated nothing; with "
                "more than half of them skipped the run has not trained, so it stops here. Check the "
                "student's weights for NaN or inf, or try a lower distill.lr; the steps are in "
                f"{self.work / METRICS} (column non_finite)."
            )

    def _end_epoch(self, state: TrainingState, metrics: Metrics, started: float) -> None:
        orig, cf = _terms(state.sums)
        row: dict[str, Any] = dict(
            kind="epoch",
            epoch=state.epoch,
            step=state.step,
            loss=self._total(state.sums),
            loss_orig=orig,
            loss_cf=cf,
            tokens_orig=int(state.sums["orig_tokens"]),
            tokens_cf=int(state.sums["cf_tokens"]),
        )
        non_finite = sum(
            r.get("non_finite", 0)
            for r in metrics.rows
            if r["kind"] == "step" and r["epoch"] == state.epoch
        )
        row["non_finite"] = non_finite
        if self.val_idx:
            row.update(self._validate())
            if not math.isfinite(row["val_loss"]):
                if self.main:
                    log.warning(
                        "epoch %d: the validation loss is not finite (%s); it cannot be the best",
                        state.epoch,
                        row["val_loss"],
                    )
            elif state.best_val is None or row["val_loss"] < state.best_val:
                state.best_val, state.best_epoch = row["val_loss"], state.epoch
                self._save_model(BEST)
        row["elapsed_s"] = round(state.elapsed + time.monotonic() - started, 3)
        metrics.add(row)
        log.info(
            "epoch %d/%d: train loss %.5f (orig %.5f, cf %.5f)%s%s",
            state.epoch,
            self.spec.epochs,
            row["loss"],
            orig,
            cf,
            f", validation loss {row['val_loss']:.5f}" if "val_loss" in row else "",
            f"; {non_finite} step(s) skipped as non-finite" if non_finite else "",
        )
        self._save_model(LAST)
        state.history = metrics.rows
        state.epoch += 1
        state.position = 0
        state.sums = dict.fromkeys(LOSS_SUMS, 0.0)
        self._save_state(state, started)

    def _finish(self, state: TrainingState, started: float) -> PreTrainedModel:
        if not self.main:  # process 0 alone keeps and saves the model
            return self.student.eval()
        if state.non_finite_steps:
            log.warning(
                "distill (%s): %d of %d steps had a non-finite loss or gradient and updated nothing",
                self.spec.objective,
                state.non_finite_steps,
                state.step,
            )
        keep = self.spec.keep
        if keep == "best" and state.best_epoch is None:
            log.warning(
                "keep: best, but no group was held out for validation (or no epoch had a finite "
                "validation loss); keeping the last epoch"
            )
            keep = "last"
        kept_epoch = state.best_epoch if keep == "best" else self.spec.epochs
        kept = BEST if kept_epoch != self.spec.epochs else LAST
        if kept == BEST:
            log.info(
                "keeping epoch %d (validation loss %.5f), not the last", kept_epoch, state.best_val
            )
        if self.sharded is not None:
            # The weights are spread over the processes; the kept checkpoint holds them whole.
            model = type(self.student).from_pretrained(str(self.work / kept), dtype=torch.float32)
        else:
            if kept == BEST:
                self._restore_best()
            model = self.peft.merge_and_unload() if self.peft is not None else self.student
        write_json(
            {
                "objective": self.spec.objective,
                "settings": asdict(self.spec),
                "groups_train": len(self.train_idx),
                "groups_validation": len(self.val_idx),
                "groups_with_counterfactuals": sum(
                    bool(self.encoded[i].counterfactuals) for i in self.train_idx
                ),
                "steps_per_epoch": self.steps_per_epoch,
                "steps": state.step,
                "keep": keep,
                "kept": kept,
                "kept_epoch": kept_epoch,
                "best_epoch": state.best_epoch,
                "best_val_loss": state.best_val,
                "resumed_at_steps": state.resumed,
                "non_finite_steps": state.non_finite_steps,
                "elapsed_s": round(state.elapsed + time.monotonic() - started, 3),
                "device": str(self.device),
                "processes": self.world,
                "threads": torch.get_num_threads(),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                "teacher_cache": (
                    {"path": str(self.cache.path), **self.cache.identity()}
                    if self.cache is not None
                    else None
                ),
                "fingerprint": self.fingerprint,
            },
            self.work / TRAINING,
        )
        return model.eval()


def _term(ref: tuple[int, int]) -> str:
    return "orig" if ref[1] == ORIGINAL_REF else "cf"


def _terms(sums: Mapping[str, float]) -> tuple[float, float]:
    """Per-token means of the original and counterfactual terms (NaN for a term with no tokens)."""
    orig = sums["orig"] / sums["orig_tokens"] if sums["orig_tokens"] else math.nan
    cf = sums["cf"] / sums["cf_tokens"] if sums["cf_tokens"] else math.nan
    return orig, cf


def distill(
    teacher: PreTrainedModel | None,
    student: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    groups: Sequence[DistillGroup],
    spec: DistillSpec,
    threads: int | None = None,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    teacher_cache: TeacherCache | None = None,
) -> PreTrainedModel:
    """Train `student` toward `teacher` (or on the responses, for `objective="ce"`); return it.

    `tokenizer` is the student's; `teacher_tokenizer`, when given, is checked against it
    (`check_tokenizers`). The teacher may be None for "ce", and for "kd" when `teacher_cache`
    (`leafpipe.distill.teacher_cache`, built by the teacher_logits stage) holds its top-k log-probs of
    every sample of `groups`: the loss then uses those (`kd_loss_sum(..., teacher_topk=...)`) and
    the teacher is never run; "ce" ignores the cache. Each epoch the training samples (every
    original and counterfactual, or each original with one drawn counterfactual:
    `spec.counterfactuals`) are shuffled and cut into length-grouped steps
    (`distill_data.epoch_plan`); a step accumulates `global_batch / micro_batch` micro-batches.
    Order and draws are functions of (seed, epoch), so λ = 0 and groups stripped of their
    counterfactuals train on exactly the same batches.

    `work_dir` holds the resumable state, the best/ and last/ checkpoints, metrics.csv and
    training.json (docs/data-schemas.md); a state found there from the same settings, data and
    models is resumed, any other state is discarded. Without `work_dir` a temporary folder is
    used and removed. `on_step(step, metrics_row)` runs after each optimiser step (and after
    that step's checkpoint). The returned model holds the kept weights (`spec.keep`), merged
    when LoRA was used, in eval mode, on the training device; the teacher is frozen and moved
    to that device too (in bf16 on a GPU). `threads` sets torch's CPU thread count.
    """
    if not groups:
        raise ValueError("no samples to distill")
    if spec.objective == "kd" and teacher is None and teacher_cache is None:
        raise ValueError("objective 'kd' needs a teacher model or a teacher top-k cache")
    if spec.objective == "kd" and teacher_cache is not None:
        teacher = None  # the cache stands in for it
    check_tokenizers(tokenizer, teacher_tokenizer)
    _check_heads(student, teacher if spec.objective == "kd" else None, tokenizer)
    if spec.lora is not None:
        _require_peft()
    if threads is not None:
        torch.set_num_threads(threads)
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="leafpipe-distill-"))
        return _Trainer(
            teacher, student, tokenizer, groups, spec, Path(work_dir), on_step, teacher_cache
        ).run()
