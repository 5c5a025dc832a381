"""Memory-lean token-level distillation losses, computed in chunks from final hidden states.

The full-logit path (`losses.token_kl`) holds [B, T, V] logits of both models, their log-softmaxes and
the temporaries of the KL and of its backward: at V = 128256 and T = 2048 that is about 1 GiB per
fp32 tensor, several of them at once. Here only the trained positions are gathered from the final
hidden states, and the student's and teacher's LM heads are applied to `chunk_tokens` of them at a
time, so peak memory is O(chunk_tokens x V) instead of O(tokens x V).

How the student's gradient is obtained without keeping the chunk's logits for the backward pass:
for a plain `nn.Linear` head (Llama, Qwen2, Gemma, tied or not: a tied head is just an `nn.Linear`
whose weight is the embedding matrix, so it needs no special case) the gradient of every divergence
with respect to the logits has a closed form (below), so each chunk computes its loss *and* its
gradient at once and immediately contracts the latter with the head weight and the hidden states
(`grad_hidden = G W`, `grad_W += G^T h`). The backward pass then only scales those stored gradients
by the incoming gradient. The head's matmuls are the same three as with autograd (logits,
input gradient, weight gradient), so no work is repeated. Any other head module (a LoRA-wrapped or
quantised head) falls back to `torch.utils.checkpoint` per chunk: the same closed-form gradient,
but the chunk's student and teacher logits are recomputed in the backward pass (one extra head
forward for each model). The fused path reads `head.weight` directly and never calls the head's
`forward`, so forward hooks on the head (FSDP's unsharding, for one) do not run; wrap such a head
in any other module to take the checkpointed path.

Divergences, per trained token, with p = p_T and q = p_S the teacher's and student's next-token
distributions at temperature tau (softmax of logits / tau), s the student's logits / tau, and the
result multiplied by tau**2 (Hinton et al. 2015, as `losses.token_kl`):

- forward_kl: KL(p || q) = sum_v p (log p - log q); dL/ds = q - p.
- reverse_kl: KL(q || p) = sum_v q (log q - log p); dL/ds = q * (log q - log p - KL(q || p)).
- jsd: the generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024) with
  M = beta * p + (1 - beta) * q:  JSD(beta) = beta * KL(p || M) + (1 - beta) * KL(q || M);
  dL/ds = q * (g - sum_v q g) with g = (1 - beta) * (log q - log M). beta = 0.5 is the symmetric
  JSD, bounded by log 2. beta must lie strictly in (0, 1): at either end JSD(beta) is identically 0.
  Its limits are the KLs, scaled: JSD(beta) / beta -> KL(p || q) as beta -> 0 and
  JSD(beta) / (1 - beta) -> KL(q || p) as beta -> 1 (GKD implementations that accept beta = 0 or 1
  return those KLs there); use kind="forward_kl" or "reverse_kl" for them.

All divergence arithmetic is fp32 whatever the models' dtype (bf16 log-probabilities of a large
vocabulary lose most of a KL's precision).

The student head's three matrix products per chunk (logits, hidden-state gradient, weight
gradient) run in the dtype `KDSpec.head_precision` chooses. "fp32" keeps the head's own dtype:
fp32 for the trainer's fp32 master weights, since autocast covers only the decoder. "bf16" casts
the chunk's hidden states and the weight to bf16, the weight once per call (one [V, H] bf16 copy
lives through the loss; a cast per chunk would re-read the fp32 weight for every chunk, which on
a GPU takes about as long as a 512-token chunk's product). "auto" is bf16 when the head is on a
CUDA device, fp32 elsewhere. The bf16 logits are upcast to fp32 before the softmax. With bf16 (or
fp16) products, of a cast or of a bf16 head (a bf16 model, FSDP's bf16 compute copy), the
chunks' weight-gradient products are summed in an fp32 [V, H] buffer and cast to the weight's
dtype once at the end (extra memory: that buffer and one [V, H] product per chunk). So each
chunk's product is rounded to bf16 once, and the number of chunks adds no rounding, where a bf16
sum would round the running sum at every chunk. The fused path computes every chunk's gradient in
its forward pass anyway, so the buffer is all it takes; a custom autograd Function per chunk would
add a backward call per chunk for the same sums. Any other head (the checkpointed path) runs under
bf16 autocast instead, and autograd sums its chunks' weight gradients in the weight's dtype. The
teacher's head runs in the teacher's dtype (bf16 on a GPU: `distill` puts it so).

The fused path's loss can be backpropagated once (no `retain_graph`): its stored gradients are
handed over to autograd rather than copied, which is what keeps the [V, H] weight gradient from
existing twice.

Devices: a model spread over several GPUs (accelerate's `device_map`) returns its final hidden
states on its last GPU, while the batch's masks and ids stay where the caller put them, and its LM
head may sit on yet another GPU. Index and mask tensors are moved to the hidden states' device
where they meet; each chunk's logits are made on the head's device (the fused path moves the
chunk's hidden states there; a head called as a module has its own hooks), the teacher's side of a
chunk is moved to the student's logits, and the loss and the hidden states' gradient come back on
the student hidden states' device.

Top-k teacher ("top-k teacher logits cached to disk"): `teacher_topk` keeps, for each trained
token, the k largest teacher log-probabilities at temperature tau (log-softmax over the FULL
vocabulary, then top-k) and their token ids. `kd_loss_sum(..., teacher_topk=cache)` then uses the
teacher distribution renormalised over its k tokens, p~ = softmax(cached log-probs over the k):
- forward_kl: sum over the k tokens of p~ (log p~ - log q), q the student's FULL-vocabulary
  softmax (the student's mass outside the k tokens is pushed down through the normaliser of q);
- reverse_kl and jsd: the student is restricted to the same k tokens and renormalised,
  q~ = softmax(s over the k), and the divergence is the full-vocabulary formula applied to
  (p~, q~) over the k tokens; the gradient reaches only the k logits.
With k equal to the vocabulary size all three equal their full-vocabulary values.

Vocabularies: teacher and student must share a tokenizer. A teacher head that is LARGER than the
student's (same family, embeddings padded to a multiple of 64 or 128 for GEMM efficiency, e.g.
Qwen2.5-7B's 152064 rows against Qwen2.5-0.5B's 151936) is truncated to the student's vocabulary
before its softmax: the extra rows are never ids of the shared tokenizer, so the teacher gives them
negligible but non-zero mass that the student could only match by also learning to predict
impossible tokens. A SMALLER teacher vocabulary raises ValueError: the student would have ids the
teacher cannot score.

Final-logit soft-capping (Gemma 2: logits = cap * tanh(logits / cap), `config.final_logit_softcapping`)
is applied when the head is wrapped in `SoftcappedHead`; `output_head(model)` does that from the
model's config, so callers should pass `output_head(model)` rather than `model.lm_head`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

KD_KINDS = ("forward_kl", "reverse_kl", "jsd")
HEAD_PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class KDSpec:
    """Which divergence, at which temperature, in chunks of how many response tokens.

    `kind`: "forward_kl" KL(p_T || p_S), "reverse_kl" KL(p_S || p_T), or "jsd", the generalised JSD
    of GKD with mixture M = beta * p_T + (1 - beta) * p_S (module docstring). Both distributions are
    softened by `temperature` and the loss is scaled by temperature**2. `beta` lies strictly in
    (0, 1) and only matters for "jsd". `chunk_tokens`: trained tokens per chunk; 0 puts them all in
    one chunk (the arithmetic of the chunked path at the memory cost of the full-logit one).
    A chunk holds about three [chunk_tokens, V] fp32 buffers at its peak (four for "jsd"), on top
    of the head's [V, H] weight gradient, which both paths must produce. The default of 256 keeps
    them at 0.375 GiB for V = 128256, below the 1 GiB weight gradient of a 2048-wide head, and the
    chunked peak under a quarter of the full-logit one; each head matmul ([256, H] x [H, V]) stays
    large. On CPU, 512 and 1024 saved 9-11 % of the CPU time at 1.3x and 1.8x the peak memory
    (docs/performance.md, "Distillation loss"). `head_precision`: the dtype of the student head's
    matrix products, "bf16", "fp32" (the head's own dtype) or "auto", bf16 on a CUDA device (module
    docstring).
    """

    kind: str = "forward_kl"
    temperature: float = 1.0
    beta: float = 0.5
    chunk_tokens: int = 256
    head_precision: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in KD_KINDS:
            raise ValueError(f"unknown KD kind {self.kind!r}; expected one of {KD_KINDS}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be positive and finite, got {self.temperature}")
        if not 0.0 < self.beta < 1.0:
            raise ValueError(
                f"beta must lie strictly between 0 and 1, got {self.beta} "
                "(at 0 or 1 the JSD is identically 0; use forward_kl or reverse_kl for those limits)"
            )
        if (
            isinstance(self.chunk_tokens, bool)
            or not isinstance(self.chunk_tokens, int)
            or self.chunk_tokens < 0
        ):
            raise ValueError(
                f"chunk_tokens must be an integer >= 0 (0 = all at once), got {self.chunk_tokens!r}"
            )
        _check_head_precision(self.head_precision)


def _check_head_precision(value: str) -> None:
    if value not in HEAD_PRECISIONS:
        raise ValueError(f"unknown head_precision {value!r}; expected one of {HEAD_PRECISIONS}")


@dataclass
class TopK:
    """A cached teacher distribution: for each trained token, in target order (row-major order of the
    True entries of `target_mask`), the k largest teacher log-probabilities at temperature tau.

    Shapes: `indices` [N, k] int64 token ids; `logprobs` [N, k] fp32, log-softmax at `temperature`
    over the teacher's FULL (student-sized) vocabulary, then top-k, so they sum to less than 1.
    `temperature` (optional) is checked against `KDSpec.temperature` when the cache is used.
    """

    indices: torch.Tensor
    logprobs: torch.Tensor
    temperature: float | None = None

    def to(self, device: torch.device | str) -> "TopK":
        return TopK(self.indices.to(device), self.logprobs.to(device), self.temperature)


class SoftcappedHead(nn.Module):
    """An LM head followed by final-logit soft-capping: logits = cap * tanh(head(h) / cap) (Gemma 2)."""

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
    """Final hidden states [B, T, H] of a causal LM, after its final norm: the tensor the LM head consumes.

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


def _trained_rows(hidden: torch.Tensor, target_mask: torch.Tensor, name: str) -> torch.Tensor:
    """hidden [B, T, H] -> [N, H]: the positions t < T - 1 where target_mask [B, T-1] is True,
    in row-major order (the order of `TopK` rows), on hidden's device (which the mask may not share)."""
    if hidden.dim() != 3 or target_mask.dim() != 2:
        raise ValueError(
            f"{name} must be [B, T, H] and target_mask [B, T-1]; got {tuple(hidden.shape)} "
            f"and {tuple(target_mask.shape)}"
        )
    b, t, h = hidden.shape
    if target_mask.shape != (b, t - 1):
        raise ValueError(
            f"target_mask {tuple(target_mask.shape)} must be [B, T-1] for {name} {tuple(hidden.shape)}"
        )
    flat = _flat_positions(target_mask, t).to(hidden.device)
    return hidden.reshape(b * t, h).index_select(0, flat)


def _flat_positions(target_mask: torch.Tensor, t: int) -> torch.Tensor:
    rows, cols = target_mask.bool().nonzero(as_tuple=True)
    return rows * t + cols


def _linear_parts(head: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float | None] | None:
    """(weight, bias, soft-cap) when the head is a plain nn.Linear (optionally soft-capped), else None."""
    cap = None
    if isinstance(head, SoftcappedHead):
        cap, head = head.cap, head.head
    if type(head) is nn.Linear:
        return head.weight, head.bias, cap
    return None


def _bf16_products(precision: str, device: torch.device) -> bool:
    """Whether the student head's matrix products run in bf16 (`KDSpec.head_precision` on `device`)."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def _to_head_dtype(hidden: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """Hidden states in a linear head's dtype (autocast may have produced another); others unchanged."""
    parts = _linear_parts(head)
    return hidden if parts is None else hidden.to(parts[0].dtype)


def _vocab_size(head: nn.Module, hidden: torch.Tensor) -> int:
    inner = head.head if isinstance(head, SoftcappedHead) else head
    if isinstance(inner, nn.Linear):
        return inner.out_features
    with torch.no_grad():  # an unknown module: ask it
        return int(head(hidden.new_zeros(1, hidden.shape[-1])).shape[-1])


def _check_vocab(teacher_vocab: int, student_vocab: int) -> None:
    if teacher_vocab < student_vocab:
        raise ValueError(
            f"teacher vocabulary ({teacher_vocab}) is smaller than the student's ({student_vocab}); "
            "teacher and student must share a tokenizer"
        )


# --- divergences on one chunk: loss per token and its gradient w.r.t. s = logits / tau -------------
# Every function gets fp32 log-probabilities it owns and may overwrite; `log_q` is [c, V'] and the
# returned gradient reuses its buffer, so a chunk holds about three [c, V] buffers at its peak.


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b, -1) for [c, V] tensors without a [c, V] temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _reverse_kl(log_p: torch.Tensor, log_q: torch.Tensor, need_grad: bool):
    f = log_p.neg_().add_(log_q)  # log q - log p, in log_p's buffer
    q = log_q.exp_()
    loss = _rowdot(q, f)
    if not need_grad:
        return loss, None
    return loss, f.sub_(loss.unsqueeze(1)).mul_(q)


def _jsd(log_p: torch.Tensor, log_q: torch.Tensor, beta: float, need_grad: bool):
    log_m = log_p + math.log(beta)
    torch.logaddexp(log_m, log_q + math.log1p(-beta), out=log_m)  # log M, without a third temporary
    p = log_p.exp()
    to_teacher = _rowdot(p, log_p.sub_(log_m))  # KL(p || M)
    del p, log_p
    g = log_m.neg_().add_(log_q)  # log q - log M, in log_m's buffer
    q = log_q.exp_()
    to_student = _rowdot(q, g)  # KL(q || M)
    loss = beta * to_teacher + (1 - beta) * to_student
    if not need_grad:
        return loss, None
    return loss, g.sub_(to_student.unsqueeze(1)).mul_(q).mul_(1 - beta)


def _restricted(
    divergence: Callable,
    log_pk: torch.Tensor,
    log_q: torch.Tensor,
    idx: torch.Tensor,
    need_grad: bool,
):
    """A divergence between the teacher's and the student's distributions both renormalised over k tokens."""
    log_qk = torch.log_softmax(log_q.gather(1, idx), dim=-1)
    loss, grad_k = divergence(log_pk.clone(), log_qk, need_grad)
    if not need_grad:
        return loss, None
    return loss, log_q.zero_().scatter_(1, idx, grad_k)


class _Target:
    """The teacher side of a loss: `prepare(rows, device)` builds what a chunk needs, on the device
    of the student's logits, before they exist (so their buffers do not overlap more than needed),
    `finish(state, log_q, need_grad)` returns (loss [c] fp32, dL/ds [c, V] or None) and may
    overwrite both."""

    def prepare(self, rows: slice, device: torch.device) -> Any:
        raise NotImplementedError

    def finish(self, state: Any, log_q: torch.Tensor, need_grad: bool):
        raise NotImplementedError


class _FullTeacher(_Target):
    def __init__(self, hidden: torch.Tensor, head: nn.Module, vocab: int, spec: KDSpec) -> None:
        self.hidden, self.head, self.vocab, self.spec = hidden, head, vocab, spec

    def prepare(self, rows: slice, device: torch.device) -> Any:
        with torch.no_grad():
            log_p = _log_softmax_at(
                self.head(self.hidden[rows]), self.vocab, self.spec.temperature
            ).to(device)
            if self.spec.kind == "forward_kl":
                p = log_p.exp()
                return p, _rowdot(p, log_p)  # teacher's negative entropy; log_p is freed here
            return log_p

    def finish(self, state: Any, log_q: torch.Tensor, need_grad: bool):
        kind = self.spec.kind
        if kind == "forward_kl":
            p, neg_entropy = state
            loss = neg_entropy - _rowdot(p, log_q)
            return loss, (log_q.exp_().sub_(p) if need_grad else None)
        if kind == "reverse_kl":
            return _reverse_kl(state, log_q, need_grad)
        return _jsd(state, log_q, self.spec.beta, need_grad)


class _TopKTeacher(_Target):
    def __init__(self, cache: TopK, spec: KDSpec) -> None:
        self.cache, self.spec = cache, spec

    def prepare(self, rows: slice, device: torch.device) -> Any:
        idx = self.cache.indices[rows].to(device, torch.long)
        # The cached log-probs, renormalised over their k tokens.
        log_pk = torch.log_softmax(self.cache.logprobs[rows].to(device, torch.float32), dim=-1)
        return idx, log_pk

    def finish(self, state: Any, log_q: torch.Tensor, need_grad: bool):
        idx, log_pk = state
        kind = self.spec.kind
        if kind == "forward_kl":
            pk = log_pk.exp()
            loss = (pk * (log_pk - log_q.gather(1, idx))).sum(-1)
            return loss, (log_q.exp_().scatter_add_(1, idx, -pk) if need_grad else None)
        if kind == "reverse_kl":
            return _restricted(_reverse_kl, log_pk, log_q, idx, need_grad)
        beta = self.spec.beta
        return _restricted(lambda lp, lq, g: _jsd(lp, lq, beta, g), log_pk, log_q, idx, need_grad)


class _Labels(_Target):
    """Cross-entropy with the next tokens: loss = -log q[y], dL/ds = q - onehot(y)."""

    def __init__(self, targets: torch.Tensor) -> None:
        self.targets = targets

    def prepare(self, rows: slice, device: torch.device) -> Any:
        return self.targets[rows].to(device).unsqueeze(1)

    def finish(self, state: Any, log_q: torch.Tensor, need_grad: bool):
        loss = -log_q.gather(1, state).squeeze(1)
        if not need_grad:
            return loss, None
        return loss, log_q.exp_().scatter_add_(
            1, state, torch.full_like(state, -1.0, dtype=log_q.dtype)
        )


def _log_softmax_at(logits: torch.Tensor, vocab: int, temperature: float) -> torch.Tensor:
    """fp32 log-softmax of logits[..., :vocab] / temperature (the teacher's truncation to the student's vocabulary)."""
    if logits.shape[-1] > vocab:
        logits = logits[..., :vocab]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)


# --- one chunk from raw logits ---------------------------------------------------------------------


def _chunk_from_logits(
    make_logits: Callable[[], torch.Tensor],
    cap: float | None,
    tau: float,
    target: _Target,
    state: Any,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Raw student logits z [c, V] from `make_logits` -> (tau**2 * sum of the chunk's divergences,
    dLoss/dz [c, V] fp32 or None). The logits are made here, and overwritten, so that no caller
    holds a reference that would keep an extra [c, V] buffer alive."""
    z = make_logits().float()
    tanh = None
    if cap is not None:
        tanh = z.div_(cap).tanh_()
        s = tanh * (cap / tau)
    else:
        s = z.div_(tau) if tau != 1.0 else z
    log_q = torch.log_softmax(s, dim=-1)
    del s, z
    loss, grad = target.finish(state, log_q, need_grad)
    del log_q
    total = loss.sum() * tau**2
    if grad is None:
        return total, None
    # d(tau**2 * D)/dz = tau**2 * dD/ds * ds/dz, ds/dz = (1/tau) * (1 - tanh**2) with a soft-cap.
    if tau != 1.0:
        grad.mul_(tau)
    if tanh is not None:
        grad.mul_(tanh.square_().neg_().add_(1.0))
    return total, grad


class _FusedLinearLoss(torch.autograd.Function):
    """Chunked loss through a plain linear head; gradients computed in the forward pass, scaled in backward.

    The products run in `dtype` (`KDSpec.head_precision`) on the weight's device; the loss and the
    hidden states' gradient are returned on the hidden states' device."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, cap, tau, chunk, grads, dtype):
        need_h, need_w, need_b = grads
        n, width = hidden.shape
        vocab, device = weight.shape[0], weight.device
        w = weight.to(
            dtype
        )  # once for all chunks (module docstring); the weight itself when dtypes agree
        b = None if bias is None else bias.to(dtype)
        total = torch.zeros((), dtype=torch.float32, device=device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(vocab, width, dtype=torch.float32, device=device) if need_w else None
        grad_b = torch.zeros(vocab, dtype=torch.float32, device=device) if need_b else None
        need = need_h or need_w or need_b
        step = chunk or max(n, 1)
        for start in range(0, n, step):
            rows = slice(start, min(n, start + step))
            state = target.prepare(rows, device)
            h = hidden[rows].to(device, dtype)
            loss, g = _chunk_from_logits(lambda: F.linear(h, w, b), cap, tau, target, state, need)
            del state
            total += loss
            if g is None:
                continue
            g = g.to(dtype)
            if need_h:
                grad_h[rows] = g @ w  # a copy into hidden's dtype and device
            if need_w:
                if dtype == torch.float32:
                    grad_w.addmm_(g.t(), h)
                else:  # bf16/fp16: sum the chunks' products in fp32 (costs one [V, H] product per chunk)
                    grad_w += g.t() @ h
            if need_b:
                grad_b += g.sum(0, dtype=torch.float32)
            del g
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        ctx.grads = (grad_h, grad_w, grad_b)
        return total.to(hidden.device)

    @staticmethod
    def backward(ctx, grad_out):
        grads = ctx.grads
        if grads is None:
            raise RuntimeError(
                "the chunked distillation loss can be backpropagated only once (no retain_graph)"
            )
        # Drop ctx's reference, so autograd can adopt the [V, H] weight gradient as `.grad` instead of
        # copying it (it only steals tensors that nothing else holds): a copy would double that memory.
        # For the same reason the scaling (the caller's division by its token count) is in place.
        ctx.grads = None
        if not torch.equal(grad_out, torch.ones_like(grad_out)):
            for g in grads:
                if g is not None:
                    g.mul_(grad_out.to(g.device, g.dtype))
        return (*grads, None, None, None, None, None, None)


class _LogitsLoss(torch.autograd.Function):
    """Loss of one chunk from student logits that an arbitrary head produced (the checkpointed fallback).

    The gradient is saved with `save_for_backward`, so the enclosing non-reentrant checkpoint drops it
    after the forward pass and recomputes it (with the head call) in the backward pass."""

    @staticmethod
    def forward(ctx, logits, target, tau, rows, need_grad):
        state = target.prepare(rows, logits.device)
        loss, g = _chunk_from_logits(
            lambda: logits.detach().clone(), None, tau, target, state, need_grad
        )
        if g is not None:
            ctx.save_for_backward(g)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        (g,) = ctx.saved_tensors
        return g * grad_out, None, None, None, None


def _chunked_loss(
    hidden: torch.Tensor, head: nn.Module, target: _Target, tau: float, chunk: int, precision: str
) -> torch.Tensor:
    """The loss of `target` over rows `hidden` [N, H] through `head`, `chunk` rows at a time; the head's
    products in bf16 or not by `precision` (`KDSpec.head_precision`)."""
    n = hidden.shape[0]
    parts = _linear_parts(head)
    if parts is not None:
        weight, bias, cap = parts
        grad_on = torch.is_grad_enabled()
        grads = (
            grad_on and hidden.requires_grad,
            grad_on and weight.requires_grad,
            grad_on and bias is not None and bias.requires_grad,
        )
        dtype = torch.bfloat16 if _bf16_products(precision, weight.device) else weight.dtype
        return _FusedLinearLoss.apply(hidden, weight, bias, target, cap, tau, chunk, grads, dtype)
    # Any other head: per chunk, a checkpointed head call; its logits are recomputed in backward.
    total = (
        hidden.new_zeros((), dtype=torch.float32) + hidden[:0].sum()
    )  # stays in the graph when N == 0
    step = chunk or max(n, 1)
    bf16 = _bf16_products(precision, hidden.device)
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))

        def piece(h: torch.Tensor, rows: slice = rows) -> torch.Tensor:
            with torch.autocast(h.device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = head(h)
            loss = _LogitsLoss.apply(
                logits, target, tau, rows, torch.is_grad_enabled() and logits.requires_grad
            )
            return loss.to(h.device)

        if torch.is_grad_enabled():
            total = total + checkpoint(piece, hidden[rows], use_reentrant=False)
        else:
            total = total + piece(hidden[rows])
    return total


# --- public API ------------------------------------------------------------------------------------


def kd_loss_sum(
    student_hidden: torch.Tensor,
    student_head: nn.Module,
    teacher_hidden: torch.Tensor | None,
    teacher_head: nn.Module | None,
    target_mask: torch.Tensor,
    spec: KDSpec,
    teacher_topk: TopK | None = None,
) -> torch.Tensor:
    """Sum over trained tokens of the per-token divergence `spec.kind` (times tau**2); fp32 scalar.

    Shapes: `student_hidden` [B, T, Hs], `teacher_hidden` [B, T, Ht] (final hidden states, e.g. from
    `response_hidden`), `target_mask` [B, T-1] bool: `hidden[:, t]` predicts token t + 1, and only
    positions where the mask is True are used (they are gathered first, so padding never matters).
    Heads map hidden states to logits (pass `output_head(model)`); the student's may be tied to its
    embeddings. Give the teacher either as (`teacher_hidden`, `teacher_head`) or as a cached
    `teacher_topk` (rows in the mask's row-major order), not both. The teacher side runs under
    `torch.no_grad` on detached hidden states. Peak memory is O(`spec.chunk_tokens` x V).
    The caller divides by the number of trained tokens (so normalisation spans micro-batches).
    """
    student_rows = _trained_rows(student_hidden, target_mask, "student_hidden")
    parts = _linear_parts(student_head)
    vocab = parts[0].shape[0] if parts is not None else _vocab_size(student_head, student_rows)
    if teacher_topk is not None:
        if teacher_hidden is not None or teacher_head is not None:
            raise ValueError(
                "give the teacher either as teacher_hidden and teacher_head or as teacher_topk, not both"
            )
        if (
            teacher_topk.indices.shape != teacher_topk.logprobs.shape
            or teacher_topk.indices.dim() != 2
        ):
            raise ValueError(
                f"TopK indices {tuple(teacher_topk.indices.shape)} and logprobs "
                f"{tuple(teacher_topk.logprobs.shape)} must both be [N, k]"
            )
        if teacher_topk.indices.shape[0] != student_rows.shape[0]:
            raise ValueError(
                f"TopK has {teacher_topk.indices.shape[0]} rows but target_mask has "
                f"{student_rows.shape[0]} trained tokens"
            )
        if teacher_topk.temperature is not None and teacher_topk.temperature != spec.temperature:
            raise ValueError(
                f"TopK was cached at temperature {teacher_topk.temperature}, spec has {spec.temperature}"
            )
        if teacher_topk.indices.numel() and int(teacher_topk.indices.max()) >= vocab:
            raise ValueError(
                f"TopK holds token ids >= the student's vocabulary ({vocab}); cache it with "
                "teacher_topk(..., vocab_size=student vocabulary)"
            )
        target: _Target = _TopKTeacher(teacher_topk, spec)
    else:
        if teacher_hidden is None or teacher_head is None:
            raise ValueError(
                "give the teacher as teacher_hidden and teacher_head, or as teacher_topk"
            )
        if teacher_hidden.shape[:2] != student_hidden.shape[:2]:
            raise ValueError(
                f"teacher_hidden {tuple(teacher_hidden.shape)} and student_hidden "
                f"{tuple(student_hidden.shape)} differ in [B, T]"
            )
        teacher_rows = _to_head_dtype(
            _trained_rows(teacher_hidden.detach(), target_mask, "teacher_hidden"), teacher_head
        )
        _check_vocab(_vocab_size(teacher_head, teacher_rows), vocab)
        target = _FullTeacher(teacher_rows, teacher_head, vocab, spec)
    return _chunked_loss(
        student_rows, student_head, target, spec.temperature, spec.chunk_tokens, spec.head_precision
    )


def ce_loss_sum(
    student_hidden: torch.Tensor,
    student_head: nn.Module,
    input_ids: torch.Tensor,
    target_mask: torch.Tensor,
    chunk_tokens: int,
    head_precision: str = "auto",
) -> torch.Tensor:
    """Sum of the cross-entropy of trained tokens (the `sft` variant); fp32 scalar, chunked like `kd_loss_sum`,
    the head's products in the dtype `head_precision` chooses (`KDSpec.head_precision`).

    Shapes: `student_hidden` [B, T, H], `input_ids` [B, T], `target_mask` [B, T-1]; `hidden[:, t]`
    predicts `input_ids[:, t + 1]`. Equals `F.cross_entropy(logits[:, :-1][mask], ids[:, 1:][mask],
    reduction="sum")` with the (soft-capped, if the head is) logits.
    """
    if chunk_tokens < 0:
        raise ValueError(f"chunk_tokens must be >= 0, got {chunk_tokens}")
    _check_head_precision(head_precision)
    rows = _trained_rows(student_hidden, target_mask, "student_hidden")
    if input_ids.shape != student_hidden.shape[:2]:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and student_hidden "
            f"{tuple(student_hidden.shape)} differ in [B, T]"
        )
    targets = input_ids[:, 1:][target_mask.bool()].long()
    return _chunked_loss(rows, student_head, _Labels(targets), 1.0, chunk_tokens, head_precision)


def teacher_topk(
    teacher_hidden: torch.Tensor,
    teacher_head: nn.Module,
    target_mask: torch.Tensor,
    k: int,
    temperature: float,
    chunk_tokens: int,
    *,
    vocab_size: int | None = None,
) -> TopK:
    """The teacher's top-k log-probabilities at `temperature` for each trained token, for caching.

    Shapes as in `kd_loss_sum`; returns `TopK` with [N, k] rows in the mask's row-major order. The
    log-softmax runs over the full vocabulary (truncated to `vocab_size`, the student's, when given
    and smaller than the teacher's; see the module docstring), so the cached values are true
    log-probabilities; `kd_loss_sum` renormalises them over the k tokens.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be positive and finite, got {temperature}")
    if chunk_tokens < 0:
        raise ValueError(f"chunk_tokens must be >= 0, got {chunk_tokens}")
    rows = _to_head_dtype(
        _trained_rows(teacher_hidden.detach(), target_mask, "teacher_hidden"), teacher_head
    )
    teacher_vocab = _vocab_size(teacher_head, rows)
    vocab = teacher_vocab if vocab_size is None else vocab_size
    _check_vocab(teacher_vocab, vocab)
    if not 0 < k <= vocab:
        raise ValueError(f"k must lie in 1..{vocab}, got {k}")
    n = rows.shape[0]
    indices = torch.empty(n, k, dtype=torch.long, device=rows.device)
    logprobs = torch.empty(n, k, dtype=torch.float32, device=rows.device)
    step = chunk_tokens or max(n, 1)
    with torch.no_grad():
        for start in range(0, n, step):
            sl = slice(start, min(n, start + step))
            values, ids = _log_softmax_at(teacher_head(rows[sl]), vocab, temperature).topk(
                k, dim=-1
            )
            logprobs[sl], indices[sl] = values, ids
    return TopK(indices, logprobs, float(temperature))
