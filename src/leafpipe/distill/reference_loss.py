"""Token-level distillation loss between a teacher's and a student's next-token distributions."""

from __future__ import annotations

import torch


def token_kl(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    target_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Forward KL(p_T ‖ p_S) per trained token, averaged over each sample's trained tokens.

    Shapes: `teacher_logits`, `student_logits` [B, T-1, V]; `target_mask` [B, T-1] (bool);
    returns [B]. The logits must be aligned with `Batch.target_mask`, i.e. the caller passes
    `model(...).logits[:, :-1]` so that position t predicts token t + 1.

    Forward KL (teacher first) is the distillation loss of the paper's public code: the student is
    pushed to cover every token the teacher deems likely. Both distributions are softened by the
    temperature τ and the result is scaled by τ² so gradient magnitudes stay comparable across τ
    (Hinton et al. 2015). The computation is done in fp32 whatever the models' dtype, since
    bf16 log-probabilities of a large vocabulary lose most of the KL's precision. Per-sample means
    keep one long response from dominating a batch, as `batching.response_cross_entropy` does.
    Positions outside the mask (padding, prompt) do not affect the result, whatever they hold.
    """
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher logits {tuple(teacher_logits.shape)} and student logits "
            f"{tuple(student_logits.shape)} differ; teacher and student must share a vocabulary"
        )
    if target_mask.shape != teacher_logits.shape[:-1]:
        raise ValueError(
            f"target mask {tuple(target_mask.shape)} does not match logits "
            f"{tuple(teacher_logits.shape)}; pass logits[:, :-1] with Batch.target_mask"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_p_t = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_p_s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # [B, T-1]
    mask = target_mask.bool()
    kl = torch.where(mask, kl, torch.zeros_like(kl))
    n_tokens = mask.sum(-1).clamp_min(1)
    return kl.sum(-1) / n_tokens * temperature**2
