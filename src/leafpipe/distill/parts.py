"""The parts of a distillation run, built before its first step: the processes, the encoded
data and its split, the teacher (or its cache), the student (LoRA, checkpointing, sharding) and
the optimiser, and the checks that they fit together.

`TrainerParts` is the set-up phase of `leafpipe.distill.trainer._Trainer`; the order of its steps
is the order of the random draws (LoRA's initialisation comes after the seed), so it is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.distill import parallel
from leafpipe.distill.checkpoints import run_fingerprint
from leafpipe.distill.data import DistillGroup, Step, encode_groups, epoch_plan, validation_split
from leafpipe.distill.spec import DistillSpec, LoraSpec
from leafpipe.distill.teacher_cache import TeacherCache

log = logging.getLogger("leafpipe.distill.trainer")  # the trainer's log lines keep its name


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


def head_rows(model: PreTrainedModel) -> int:
    return model.get_output_embeddings().weight.shape[0]


def check_heads(
    student: PreTrainedModel, teacher: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase
) -> None:
    for role, model in (("student", student), ("teacher", teacher)):
        if model is not None and head_rows(model) < len(tokenizer):
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the {role} model's output layer "
                f"only {head_rows(model)}; use the tokenizer the models were trained with"
            )
    if teacher is not None and head_rows(teacher) < head_rows(student):
        raise ValueError(
            f"the teacher's output layer ({head_rows(teacher)} tokens) is smaller than the "
            f"student's ({head_rows(student)}); the teacher's vocabulary must be at least the "
            "student's"
        )


def require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ImportError(
            "distill.lora is set but peft is not installed; install it with "
            "pip install 'leafpipe[lora]', or set distill.lora: null to train every weight"
        ) from None


def wrap_lora(student: PreTrainedModel, lora: LoraSpec) -> Any:
    require_peft()
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


def enable_checkpointing(model: PreTrainedModel) -> None:
    # transformers 5 renamed the switch; older versions only have the first name.
    enable = (
        getattr(model, "activation_checkpointing_enable", None)
        or model.gradient_checkpointing_enable
    )
    enable()
    model.config.use_cache = False


def allow_tf32(device: torch.device) -> None:
    """On CUDA, let fp32 matrix products use TF32 (inputs rounded to a 10-bit mantissa, fp32 sums).

    Under bf16 autocast the student's layers and the bf16 teacher make no fp32 products; the ones
    left are the student head's three per chunk with `kd.head_precision: fp32`, which without TF32
    run at a small fraction of the tensor cores' rate (kd_loss: bf16 products are faster still).
    TF32 keeps fp32's range and sums, so it is the fp32 setting's precision on a GPU. A flag of the
    whole process, which here is the distill job's own.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.fp32_precision = "tf32"


def make_optimizer(
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


class TrainerParts:
    """The set-up phase: everything a step needs, built in the order of the random draws."""

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
        self.rank, self.processes, self.device = parallel.setup(
            timedelta(minutes=spec.collective_timeout_min)
        )
        allow_tf32(self.device)
        self.main = self.rank == 0
        self._build_data(groups)
        if self.cache is not None:
            self._check_cache(groups, student)
        uses_teacher = spec.objective == "kd" and self.cache is None
        self.fingerprint = run_fingerprint(
            asdict(spec),
            self.val_idx,
            self.encoded,
            (student, teacher) if uses_teacher else (student,),
            extra=self.cache.identity() if self.cache is not None else None,
        )
        self._build_models(teacher if uses_teacher else None, student)

    def _build_data(self, groups: Sequence[DistillGroup]) -> None:
        """The encoded groups, their split and the number of steps."""
        spec, tokenizer = self.spec, self.tokenizer
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

    def _check_cache(self, groups: Sequence[DistillGroup], student: PreTrainedModel) -> None:
        """That the teacher cache holds these samples, at this temperature and vocabulary."""
        cache, spec = self.cache, self.spec
        cache.check(groups, self.encoded)
        if cache.temperature != spec.kd.temperature:
            raise ValueError(
                f"teacher cache {cache.path} holds log-probs at temperature "
                f"{cache.temperature}, distill.kd.temperature is {spec.kd.temperature}"
            )
        if cache.vocab_size != head_rows(student):
            raise ValueError(
                f"teacher cache {cache.path} was built for a vocabulary of "
                f"{cache.vocab_size}, the student's output layer has {head_rows(student)}"
            )

    def _build_models(self, teacher: PreTrainedModel | None, student: PreTrainedModel) -> None:
        """The teacher (None when not run), the student and its optimiser, on the device."""
        spec = self.spec
        torch.manual_seed(spec.seed)  # LoRA initialisation and dropout
        self.teacher = None
        if teacher is not None:
            # Frozen, and in bf16 on a GPU: it only ever runs forward (inference mode).
            teacher = teacher.eval().requires_grad_(False).to(self.device)
            self.teacher = teacher.to(torch.bfloat16) if self.device.type == "cuda" else teacher
        self.peft = wrap_lora(student, spec.lora) if spec.lora else None
        # Forward passes go through the plain transformers model; peft injected its adapters
        # into that model's layers, so they run there too.
        self.student = (self.peft.get_base_model() if self.peft else student).to(self.device)
        if spec.gradient_checkpointing:
            enable_checkpointing(self.student)
        # With several processes and fsdp, each holds a shard of the student (data_parallel).
        self.sharded = (
            parallel.ShardedStudent(self.student, self.device)
            if spec.fsdp and self.processes > 1
            else None
        )
        self.params = [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, spec)
        if self.processes > 1:  # weights are equal everywhere; dropout masks should not be
            torch.manual_seed(spec.seed + 1_000_003 * self.rank)

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
