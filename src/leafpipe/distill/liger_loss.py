"""Liger-Kernel's fused linear JSD as the distillation loss (`distill.kd.backend: liger`).

Liger's `LigerFusedLinearJSD` does on a CUDA GPU, in Triton kernels, what the fused path of
`leafpipe.distill.kd_loss` does: it applies both LM heads to chunks of rows, computes each chunk's
divergence and its gradient in the forward pass, and contracts that gradient with the head weight
and the hidden states at once, so [N, V] logits never exist. Per row, with P the teacher's and Q
the student's distribution at temperature tau (softmax of logits / tau), it computes
    beta * KL(P || M) + (1 - beta) * KL(Q || M),    M = beta * P + (1 - beta) * Q,
which is leafpipe's "jsd" with the same beta, and its kernel computes beta = 0 as KL(P || Q) and
beta = 1 as KL(Q || P): leafpipe's forward_kl and reverse_kl (`liger_arguments`). It returns the
MEAN over its rows and does not multiply by tau**2; `kd_loss_sum` returns the SUM over trained
tokens times tau**2, so Liger's loss is multiplied by tau**2 * N, and its gradients scale with it.

What differs from the chunked backend, and is refused rather than approximated:
- Heads: Liger takes bare weights, with no bias and no final-logit soft-capping (Gemma 2), so both
  heads must be a plain bias-free `nn.Linear` (`liger_weight`). A teacher head larger than the
  student's is cut to the student's vocabulary, as `leafpipe.distill.heads` explains.
- A cached top-k teacher (`distill.teacher_topk`): Liger needs the teacher's head and hidden
  states.
- sft's cross-entropy stays on the chunked path (`ce_loss_sum` has no backend).
What differs and is accepted:
- Chunks: Liger sizes them itself (ceil(V / H) chunks of the rows on GPUs before Blackwell);
  `chunk_tokens` is not used.
- Precision: `head_precision` picks the dtype of the student rows and of a copy of the head
  weight, made once per call as the chunked path does. With bf16, Liger sums the chunks' weight
  gradients in fp32 (`accum_dtype`) but returns them rounded to bf16, which autograd then casts
  to the fp32 master weight: one more bf16 rounding of the weight gradient than the chunked path,
  and one more [V, H] buffer. The divergence arithmetic is fp32 in both.
- Under `torch.no_grad` (the validation loss) Liger still computes the gradients.
- A teacher head on another GPU than the student's (accelerate's `device_map`) has its weight
  copied to the student head's device at every call.

liger-kernel is imported only when the loss runs; `require_liger` checks at the start of a run that
it can (a CUDA GPU, the package installed), so a run never fails at its first step instead.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from leafpipe.distill.heads import bf16_products, linear_parts, output_head
from leafpipe.distill.spec import KDSpec

# Liger's jsd_beta for the two KLs (the module docstring); "jsd" passes its own beta.
KL_BETAS = {"forward_kl": 0.0, "reverse_kl": 1.0}
FIX = "or set distill.kd.backend: chunked"
NEEDS_TEACHER = (
    "distill.kd.backend: liger applies the teacher's LM head inside the loss, so it needs the "
    f"teacher model and cannot read a top-k cache; set distill.teacher_topk: null, {FIX}"
)


def liger_arguments(spec: KDSpec) -> dict[str, float]:
    """The arguments of `LigerFusedLinearJSD` that say what it computes: `jsd_beta` (0: KL(P || Q),
    forward_kl; 1: KL(Q || P), reverse_kl; in between: jsd with that beta) and `temperature`."""
    return {"jsd_beta": KL_BETAS.get(spec.kind, spec.beta), "temperature": spec.temperature}


def liger_weight(head: nn.Module, role: str) -> torch.Tensor:
    """The weight [V, H] of a plain bias-free linear LM head, the only head Liger's loss takes.

    `role` ("student" or "teacher") names the model in the error."""
    parts = linear_parts(head)
    if parts is None:
        problem = f"is a {type(head).__name__}"
    elif parts[2] is not None:
        problem = "soft-caps its logits (final_logit_softcapping)"
    elif parts[1] is not None:
        problem = "has a bias"
    else:
        return parts[0]
    raise ValueError(
        f"distill.kd.backend: liger takes only a plain nn.Linear LM head without bias or "
        f"soft-capping (Liger's fused JSD has neither), and the {role}'s {problem}; {FIX}"
    )


def require_liger() -> None:
    """That Liger's loss can run in this process: a CUDA GPU (its kernels are Triton) and
    liger-kernel installed."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            "distill.kd.backend: liger runs Liger-Kernel's Triton kernels, which need a CUDA GPU, "
            f"and this process sees none; run it on a CUDA GPU, {FIX}"
        )
    if importlib.util.find_spec("liger_kernel") is None:
        raise ImportError(
            "distill.kd.backend: liger needs liger-kernel, which is not installed: "
            f"pip install 'leafpipe[liger]' on the machine with the CUDA GPU, {FIX}"
        )


def check_liger_run(student: nn.Module, teacher: nn.Module | None) -> None:
    """Before a run's first step, all that `distill.kd.backend: liger` needs: the teacher model
    itself (None: a top-k cache stands in for it), plain heads on both, a CUDA GPU, the package."""
    if teacher is None:
        raise ValueError(NEEDS_TEACHER)
    for role, model in (("student", student), ("teacher", teacher)):
        liger_weight(output_head(model), role)
    require_liger()


def liger_kd_loss_sum(
    student_rows: torch.Tensor,
    student_head: nn.Module,
    teacher_rows: torch.Tensor,
    teacher_head: nn.Module,
    spec: KDSpec,
) -> torch.Tensor:
    """`kd_loss_sum` computed by Liger: the sum over the rows of the divergence `spec.kind`,
    times tau**2; an fp32 scalar on the student rows' device.

    Shapes: `student_rows` [N, Hs] and `teacher_rows` [N, Ht], the trained positions' final hidden
    states (`heads.trained_rows`), the teacher's detached and checked by `kd_loss_sum`.
    """
    weight = liger_weight(student_head, "student")
    vocab, device = weight.shape[0], weight.device
    n = student_rows.shape[0]
    if n == 0:  # Liger divides by its row count; zero, with zero gradients, as the chunked path
        return weight.sum().float().to(student_rows.device) * 0.0 + student_rows.sum().float()
    dtype = torch.bfloat16 if bf16_products(spec.head_precision, device) else weight.dtype
    teacher_weight = liger_weight(teacher_head, "teacher").detach()[:vocab].to(device)
    mean = _fused_jsd(spec, dtype)(
        student_rows.to(device, dtype),
        weight.to(dtype),
        teacher_rows.to(device),
        teacher_weight,
        None,  # no labels: every row is a trained token
    )
    return (mean.float() * (spec.temperature**2 * n)).to(student_rows.device)


def _fused_jsd(spec: KDSpec, dtype: torch.dtype) -> nn.Module:
    """Liger's loss module for `spec`, its weight gradient summed in fp32 when the products are
    not."""
    from liger_kernel.transformers.fused_linear_jsd import LigerFusedLinearJSD

    accum = None if dtype == torch.float32 else torch.float32
    return LigerFusedLinearJSD(**liger_arguments(spec), accum_dtype=accum)
