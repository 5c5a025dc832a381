"""Pre-train the teacher and student from scratch on world rows.

Both are real Hugging Face architectures (Llama, Qwen2) with random initialisation, so every later
stage (gradient scoring, generation, saving) runs the same code it would on a downloaded model.
"""

from __future__ import annotations

import logging
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from leafpipe.files.atomic import atomic_path
from leafpipe.text.batching import collate, response_cross_entropy
from leafpipe.text.templates import encode_sample

ARCHITECTURES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a from-scratch model; the defaults are the default config's teacher."""

    arch: str = "llama"
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 256


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation settings; `epochs` are full passes over the rows (the last batch may be
    short)."""

    epochs: int = 4
    batch_size: int = 32
    lr: float = 3e-3
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    seed: int = 0


Log = Callable[[str], None] | logging.Logger


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A random-init causal LM of `spec.arch`, its vocabulary and special ids from `tokenizer`."""
    if spec.arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {spec.arch!r}; expected one of {sorted(ARCHITECTURES)}")
    config_cls, model_cls = ARCHITECTURES[spec.arch]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return model_cls(config)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _optimiser(
    model: PreTrainedModel, spec: TrainSpec, warmup: int, total: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with weight decay on matrices only (not on norms and biases), and its schedule of
    `total` steps (`_lr_factor`)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optim = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": spec.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=spec.lr,
        betas=(0.9, 0.98),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _lr_factor(s, warmup, total))
    return optim, sched


def train_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict],
    spec: TrainSpec,
    log: Log = _stderr,
    log_every: int = 50,
    threads: int | None = None,
) -> PreTrainedModel:
    """Train on the response tokens (and end of turn) of `rows`, deterministically for
    `spec.seed`."""
    if threads is not None:
        torch.set_num_threads(threads)
    emit = log.info if isinstance(log, logging.Logger) else log
    torch.manual_seed(spec.seed)
    samples = [
        encode_sample(tokenizer, r["instruction"], r["response"], system=r.get("system"))
        for r in rows
    ]
    per_epoch = math.ceil(len(samples) / spec.batch_size)
    total = per_epoch * spec.epochs
    warmup = max(1, round(spec.warmup_ratio * total))
    optim, sched = _optimiser(model, spec, warmup, total)
    order = list(range(len(samples)))
    shuffler = random.Random(spec.seed)
    model.train()
    emit(
        f"training {sum(p.numel() for p in model.parameters()):,} parameters on "
        f"{len(samples)} rows: {spec.epochs} epochs x {per_epoch} steps"
    )
    step, running = 0, 0.0
    with tqdm(total=total, desc="train", file=sys.stderr, mininterval=5.0) as bar:
        for epoch in range(spec.epochs):
            shuffler.shuffle(order)
            for start in range(0, len(order), spec.batch_size):
                batch = collate(
                    [samples[i] for i in order[start : start + spec.batch_size]],
                    tokenizer.pad_token_id,
                )
                logits = model(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask
                ).logits
                loss = response_cross_entropy(logits, batch).mean()
                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optim.step()
                sched.step()
                step += 1
                running += loss.item()
                bar.update(1)
                if step % log_every == 0 or step == total:
                    n = (step - 1) % log_every + 1
                    emit(
                        f"epoch {epoch + 1} step {step}/{total} loss {running / n:.4f} "
                        f"lr {sched.get_last_lr()[0]:.2e}"
                    )
                    running = 0.0
    return model.eval()


def save_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path
) -> None:
    """Save model and tokenizer together so `from_pretrained(out_dir)` restores both."""
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
