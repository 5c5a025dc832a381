"""The LM head and the final hidden states of a causal LM, and the checks that pair them.

Shared by the distillation losses (`leafpipe.distill.kd_loss`), the teacher cache, scoring
(`leafpipe.detect.scoring`) and pruning's validity check (`leafpipe.prune.validity`): each runs the
decoder alone (`response_hidden`) and applies the head (`output_head`) to the positions it needs.

Vocabularies: teacher and student must share a tokenizer. A teacher head that is LARGER than the
student's (same family, embeddings padded to a multiple of 64 or 128 for GEMM efficiency, e.g.
Qwen2.5-7B's 152064 rows against Qwen2.5-0.5B's 151936) is truncated to the student's vocabulary
before its softmax: the extra rows are never ids of the shared tokenizer, so the teacher gives them
negligible but non-zero mass that the student could only match by also learning to predict
impossible tokens. A SMALLER teacher vocabulary raises ValueError: the student would have ids the
teacher cannot score.

Final-logit soft-capping (Gemma 2: logits = cap * tanh(logits / cap),
`config.final_logit_softcapping`) is applied when the head is wrapped in `SoftcappedHead`;
`output_head(model)` does that from the model's config, so callers should pass `output_head(model)`
rather than `model.lm_head`.
"""

from __future__ import annotations

import torch
from torch import nn


class SoftcappedHead(nn.Module):
    """An LM head followed by final-logit soft-capping: logits = cap * tanh(head(h) / cap) (Gemma
    2)."""

    def __init__(self, head: nn.Module, cap: float) -> None:
        super().__init__()
        if not cap > 0:
            raise ValueError(f"soft-cap must be positive, got {cap}")
        self.head = head
        self.cap = float(cap)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(hidden) / self.cap) * self.cap


def output_head(model: nn.Module) -> nn.Module:
    """The module that maps `response_hidden(model, ...)` to `model(...).logits`.

    That is `model.get_output_embeddings()`, wrapped in `SoftcappedHead` when the model's (text)
    config sets `final_logit_softcapping`.
    """
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head)")
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    cap = getattr(config, "final_logit_softcapping", None)
    return SoftcappedHead(head, cap) if cap else head


def response_hidden(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Final hidden states [B, T, H] of a causal LM, after its final norm: the tensor the LM head
    consumes.

    `input_ids`, `attention_mask` [B, T]; a packed batch (`batching.pack`) passes no mask and its
    `position_ids` [B, T]. Calls the decoder (`model.get_decoder()`, i.e. `model.model` for Llama
    and Qwen2) instead of the full model, so no logits are computed at all;
    `output_head(model)(response_hidden(model, ids, mask))` equals `model(ids, mask).logits`.
    """
    decoder = (
        model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", None)
    )
    if decoder is None or decoder is model:
        raise ValueError(f"cannot find the decoder (base model) of {type(model).__name__}")
    out = decoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
    )
    return out.last_hidden_state


# --- gathering and validation ---------------------------------------------------------------------


def trained_rows(hidden: torch.Tensor, target_mask: torch.Tensor, name: str) -> torch.Tensor:
    """hidden [B, T, H] -> [N, H]: the positions t < T - 1 where target_mask [B, T-1] is True,
    in row-major order (the order of `TopK` rows), on hidden's device (which the mask may not
    share)."""
    if hidden.dim() != 3 or target_mask.dim() != 2:
        raise ValueError(
            f"{name} must be [B, T, H] and target_mask [B, T-1]; got {tuple(hidden.shape)} "
            f"and {tuple(target_mask.shape)}"
        )
    b, t, h = hidden.shape
    if target_mask.shape != (b, t - 1):
        raise ValueError(
            f"target_mask {tuple(target_mask.shape)} must be [B, T-1] for {name} "
            f"{tuple(hidden.shape)}"
        )
    flat = _flat_positions(target_mask, t).to(hidden.device)
    return hidden.reshape(b * t, h).index_select(0, flat)


def _flat_positions(target_mask: torch.Tensor, t: int) -> torch.Tensor:
    rows, cols = target_mask.bool().nonzero(as_tuple=True)
    return rows * t + cols


def linear_parts(head: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float | None] | None:
    """(weight, bias, soft-cap) when the head is a plain nn.Linear (optionally soft-capped), else
    None."""
    cap = None
    if isinstance(head, SoftcappedHead):
        cap, head = head.cap, head.head
    if type(head) is nn.Linear:
        return head.weight, head.bias, cap
    return None


def bf16_products(precision: str, device: torch.device) -> bool:
    """Whether the student head's matrix products run in bf16 (`KDSpec.head_precision` on
    `device`)."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def to_head_dtype(hidden: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """Hidden states in a linear head's dtype (autocast may have produced another); others
    unchanged."""
    parts = linear_parts(head)
    return hidden if parts is None else hidden.to(parts[0].dtype)


def head_vocab(head: nn.Module, hidden: torch.Tensor) -> int:
    inner = head.head if isinstance(head, SoftcappedHead) else head
    if isinstance(inner, nn.Linear):
        return inner.out_features
    with torch.no_grad():  # an unknown module: ask it
        return int(head(hidden.new_zeros(1, hidden.shape[-1])).shape[-1])


def check_vocab(teacher_vocab: int, student_vocab: int) -> None:
    if teacher_vocab < student_vocab:
        raise ValueError(
            f"teacher vocabulary ({teacher_vocab}) is smaller than the student's "
            f"({student_vocab}); "
            "teacher and student must share a tokenizer"
        )


def log_softmax_at(logits: torch.Tensor, vocab: int, temperature: float) -> torch.Tensor:
    """fp32 log-softmax of logits[..., :vocab] / temperature (the teacher's truncation to the
    student's vocabulary)."""
    if logits.shape[-1] > vocab:
        logits = logits[..., :vocab]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)
