"""Causal attention distillation, stage 2 of LeaF.

The student learns the teacher's next-token distributions over response tokens on each original
sample and, with weight λ, on one of its counterfactuals (the instruction with a confounder span
removed), teacher and student seeing the same input each time:

    L = KL(p_T(y | x) ‖ p_S(y | x)) + λ · KL(p_T(y | x \\ A) ‖ p_S(y | x \\ A))

Plain knowledge distillation (the `kd` baseline) is the same loop with λ = 0 or with groups that
have no counterfactuals.
"""

from __future__ import annotations

import logging
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import fmean

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.batching import Batch, collate
from leafpipe.losses import token_kl
from leafpipe.templates import encode_sample

log = logging.getLogger(__name__)

ORIGINAL = "original"
COUNTERFACTUAL = "counterfactual"

Pair = tuple[str, str]  # (instruction, response)


@dataclass
class DistillGroup:
    """One original sample and the counterfactuals made from it (possibly none)."""

    original: Pair
    counterfactuals: list[Pair] = field(default_factory=list)


def load_groups(rows: Sequence[dict]) -> list[DistillGroup]:
    """Group counterfactual-JSONL rows (docs/data-schemas.md) by their original sample.

    Groups come in the order of the originals in `rows`, counterfactuals in row order, so the
    result (and hence training) does not depend on how rows of different kinds interleave.
    """
    groups: dict[str, DistillGroup] = {}
    for row in rows:
        rid, source = row["id"], row["source_id"]
        if row["kind"] == ORIGINAL:
            if source in groups:
                raise ValueError(f"original {rid!r}: source {source!r} has two original rows")
            groups[source] = DistillGroup((row["instruction"], row["response"]))
        elif row["kind"] != COUNTERFACTUAL:
            raise ValueError(
                f"row {rid!r}: kind must be {ORIGINAL!r} or {COUNTERFACTUAL!r}, "
                f"got {row['kind']!r}"
            )
    for row in rows:
        if row["kind"] == COUNTERFACTUAL:
            rid, source = row["id"], row["source_id"]
            if source not in groups:
                raise ValueError(
                    f"counterfactual {rid!r}: its source {source!r} has no original row"
                )
            groups[source].counterfactuals.append((row["instruction"], row["response"]))
    return list(groups.values())


@dataclass(frozen=True)
class DistillSpec:
    """Training settings. Defaults follow the paper's public code where it states them."""

    lam: float = 1.0  # λ, weight of the counterfactual term
    temperature: float = 1.0
    epochs: int = 5
    batch_size: int = 32  # groups per optimiser step
    lr: float = 1e-5
    warmup_ratio: float = 0.03  # fraction of all steps spent warming up linearly
    weight_decay: float = 0.0  # applied to matrices only, not to norms or biases
    max_grad_norm: float = 1.0  # gradient clipping; 0 disables it
    seed: int = 0
    log_every: int = 10  # steps between log lines

    def __post_init__(self) -> None:
        if self.lam < 0 or self.temperature <= 0 or self.lr <= 0:
            raise ValueError("lam must be >= 0, temperature and lr > 0")
        if self.epochs < 1 or self.batch_size < 1 or self.log_every < 1:
            raise ValueError("epochs, batch_size and log_every must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


def lr_at(step: int, total_steps: int, spec: DistillSpec) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warm-up, then cosine decay to 0."""
    warmup = round(spec.warmup_ratio * total_steps)
    if step < warmup:
        return spec.lr * (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total_steps - warmup)
    return spec.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batch_kl(
    teacher: PreTrainedModel, student: PreTrainedModel, batch: Batch, temperature: float
) -> torch.Tensor:
    """Per-sample KL [B] over response tokens, both models fed the same batch."""
    with torch.no_grad():
        t_batch = batch.to(teacher.device)
        t_logits = teacher(
            input_ids=t_batch.input_ids, attention_mask=t_batch.attention_mask
        ).logits
    s_batch = batch.to(student.device)
    s_logits = student(input_ids=s_batch.input_ids, attention_mask=s_batch.attention_mask).logits
    return token_kl(
        t_logits[:, :-1].to(student.device), s_logits[:, :-1], s_batch.target_mask, temperature
    )


def _optimizer(student: PreTrainedModel, spec: DistillSpec) -> torch.optim.AdamW:
    """AdamW decaying matrices only, as nanoGPT does: norm gains and biases are not decayed."""
    params = [p for p in student.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=spec.lr,
    )


def _check_vocab(
    teacher: PreTrainedModel, student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    t_vocab, s_vocab = teacher.config.vocab_size, student.config.vocab_size
    if t_vocab != s_vocab:
        raise ValueError(
            f"teacher vocabulary ({t_vocab}) and student vocabulary ({s_vocab}) differ; "
            "token-level distillation needs a teacher and student that share a tokenizer"
        )
    if len(tokenizer) > s_vocab:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the models only {s_vocab}; "
            "use the tokenizer the models were trained with"
        )


def distill(
    teacher: PreTrainedModel,
    student: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    groups: Sequence[DistillGroup],
    spec: DistillSpec,
    threads: int | None = None,
) -> PreTrainedModel:
    """Train `student` in place toward `teacher` with the LeaF hybrid loss; return it in eval mode.

    Each epoch the groups are shuffled and every group with counterfactuals draws one of them.
    A batch's loss is the mean of KL_orig over its samples plus λ times the mean of KL_cf over
    the counterfactuals its samples drew. Order and draws come from two RNGs seeded by
    `spec.seed`, so λ = 0 and groups stripped of their counterfactuals train on exactly the same
    original batches. The teacher is frozen and stays in eval mode. `threads` sets torch's CPU
    thread count for this process.
    """
    if not groups:
        raise ValueError("no samples to distill")
    _check_vocab(teacher, student, tokenizer)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)  # dropout, if the student has any
    order_rng, cf_rng = random.Random(spec.seed), random.Random(spec.seed + 1)
    # Padding is masked out everywhere, so any id works; Llama tokenizers have no pad token.
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id

    originals = [encode_sample(tokenizer, *g.original) for g in groups]
    counterfactuals = [[encode_sample(tokenizer, *cf) for cf in g.counterfactuals] for g in groups]

    teacher.eval().requires_grad_(False)
    student.train()
    optimizer = _optimizer(student, spec)
    total_steps = spec.epochs * math.ceil(len(groups) / spec.batch_size)
    recent_orig: list[float] = []  # per-step loss terms since the last log line
    recent_cf: list[float] = []

    progress = tqdm(total=total_steps, desc="distill", file=sys.stderr, dynamic_ncols=True)
    step = 0
    for epoch in range(1, spec.epochs + 1):
        order = order_rng.sample(range(len(groups)), len(groups))
        drawn = [cf_rng.choice(cfs) if cfs else None for cfs in counterfactuals]
        for start in range(0, len(order), spec.batch_size):
            index = order[start : start + spec.batch_size]
            orig_batch = collate([originals[i] for i in index], pad_id)
            kl_orig = _batch_kl(teacher, student, orig_batch, spec.temperature).mean()
            loss = kl_orig
            cf_samples = [drawn[i] for i in index if drawn[i] is not None]
            if spec.lam > 0 and cf_samples:
                cf_batch = collate(cf_samples, pad_id)
                kl_cf = _batch_kl(teacher, student, cf_batch, spec.temperature).mean()
                loss = loss + spec.lam * kl_cf
                recent_cf.append(kl_cf.item())
            recent_orig.append(kl_orig.item())

            lr = lr_at(step, total_steps, spec)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if spec.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(student.parameters(), spec.max_grad_norm)
            optimizer.step()
            step += 1

            progress.update()
            progress.set_postfix(epoch=epoch, kl=f"{recent_orig[-1]:.4f}", lr=f"{lr:.2e}")
            if step % spec.log_every == 0 or step == total_steps:
                log.info(
                    "step %d/%d epoch %d lr %.3e kl_orig %.5f kl_cf %.5f",
                    step, total_steps, epoch, lr, fmean(recent_orig),
                    fmean(recent_cf) if recent_cf else float("nan"),
                )
                recent_orig.clear()
                recent_cf.clear()
    progress.close()
    return student.eval()
