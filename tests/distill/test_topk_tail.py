"""The top-k teacher with a tail bucket (`KDSpec(topk_mode="tail")`, `leafpipe.distill.topk`):
k + 1 categories, the k cached tokens and one bucket for each model's remaining mass."""

import decimal
import math

import pytest
import torch
from kd_tensors import V, make_tensors, reference_divergence, token_mask
from torch import nn

from leafpipe.distill.kd_loss import kd_loss_sum
from leafpipe.distill.spec import KD_KINDS, KDSpec
from leafpipe.distill.topk import TopK, log1mexp, teacher_topk

TOL = dict(rtol=1e-4, atol=1e-5)


def _identity_loss(logits: torch.Tensor, cache: TopK, spec: KDSpec) -> torch.Tensor:
    """`kd_loss_sum` for student logits [N, V] given directly: hidden states through an identity
    head, so the gradient w.r.t. `logits` is the gradient w.r.t. the logits."""
    n, vocab = logits.shape
    head = nn.Linear(vocab, vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.eye(vocab))
    hidden = torch.cat([logits, logits.new_zeros(n, vocab)], 1).view(n, 2, vocab)
    mask = torch.ones(n, 1, dtype=torch.bool)
    return kd_loss_sum(hidden, head, None, None, mask, spec, teacher_topk=cache)


def _cache(teacher_logp: torch.Tensor, k: int, tau: float) -> TopK:
    values, ids = teacher_logp.topk(k, dim=-1)
    return TopK(ids, values.float(), tau)


def _bucket_reference(kind, teacher_logp, student_logits, idx, tau, beta):
    """The k + 1-category divergence written out directly (autograd gives its gradient): the k
    tokens' probabilities, then 1 minus their sum, for both models; fp64."""
    p = teacher_logp.double().exp()
    q = torch.softmax(student_logits.double() / tau, -1)
    pk, qk = p.gather(1, idx), q.gather(1, idx)
    buckets_p = torch.cat([pk, 1 - pk.sum(-1, keepdim=True)], -1)
    buckets_q = torch.cat([qk, 1 - qk.sum(-1, keepdim=True)], -1)
    per_token = reference_divergence(kind, buckets_p.log(), buckets_q.log(), beta)
    return per_token.sum() * tau**2


@pytest.mark.parametrize("kind", KD_KINDS)
def test_tail_with_k_equal_to_the_vocabulary_is_the_full_loss(kind):
    sh, shead, th, thead = make_tensors(21)
    mask, tau = token_mask("empty_row"), 1.5
    cache = teacher_topk(th, thead, mask, k=V, temperature=tau, chunk_tokens=5)
    spec = KDSpec(kind=kind, temperature=tau, chunk_tokens=4, topk_mode="tail")
    loss = kd_loss_sum(sh, shead, None, None, mask, spec, teacher_topk=cache)
    log_p = torch.log_softmax(thead(th)[:, :-1][mask] / tau, -1).detach()
    log_q = torch.log_softmax(shead(sh)[:, :-1][mask] / tau, -1)
    ref = reference_divergence(kind, log_p, log_q, 0.5).sum() * tau**2
    torch.testing.assert_close(loss, ref, **TOL)
    got = torch.autograd.grad(loss, (sh, shead.weight))
    want = torch.autograd.grad(ref, (sh, shead.weight))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)


# Five tokens, k = 2 (ids 0 and 1): teacher (0.5, 0.2 | 0.15, 0.1, 0.05), student
# (0.4, 0.1 | 0.2, 0.2, 0.1); buckets P = (0.5, 0.2, 0.3), Q = (0.4, 0.1, 0.5), M = (P + Q) / 2.
HAND = {
    "forward_kl": 0.5 * math.log(0.5 / 0.4) + 0.2 * math.log(0.2 / 0.1) + 0.3 * math.log(0.3 / 0.5),
    "reverse_kl": 0.4 * math.log(0.4 / 0.5) + 0.1 * math.log(0.1 / 0.2) + 0.5 * math.log(0.5 / 0.3),
    "jsd": 0.5
    * (0.5 * math.log(0.5 / 0.45) + 0.2 * math.log(0.2 / 0.15) + 0.3 * math.log(0.3 / 0.4))
    + 0.5 * (0.4 * math.log(0.4 / 0.45) + 0.1 * math.log(0.1 / 0.15) + 0.5 * math.log(0.5 / 0.4)),
}


@pytest.mark.parametrize("kind", KD_KINDS)
def test_tail_on_five_tokens_matches_the_hand_computed_divergence(kind):
    teacher = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]).log()
    student = torch.tensor([[0.4, 0.1, 0.2, 0.2, 0.1]]).log()
    cache = _cache(teacher, 2, 1.0)
    assert cache.indices.tolist() == [[0, 1]]
    loss = _identity_loss(student, cache, KDSpec(kind=kind, topk_mode="tail"))
    assert loss.item() == pytest.approx(HAND[kind], rel=1e-5)
    renormalised = _identity_loss(student, cache, KDSpec(kind=kind))
    assert renormalised.item() != pytest.approx(HAND[kind], rel=1e-3)  # the mode matters


@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("kind", KD_KINDS)
def test_tail_gradient_matches_autograd_of_the_bucket_formula(kind, tau):
    g = torch.Generator().manual_seed(3)
    n, vocab, k, beta = 6, 40, 7, 0.3
    teacher = torch.log_softmax(torch.randn(n, vocab, generator=g) * 2 / tau, -1)
    logits = (torch.randn(n, vocab, generator=g) * 2).requires_grad_()
    cache = _cache(teacher, k, tau)
    spec = KDSpec(kind=kind, temperature=tau, beta=beta, chunk_tokens=4, topk_mode="tail")
    loss = _identity_loss(logits, cache, spec)
    (grad,) = torch.autograd.grad(loss, logits)

    reference_logits = logits.detach().double().requires_grad_()
    ref = _bucket_reference(kind, teacher, reference_logits, cache.indices, tau, beta)
    (want,) = torch.autograd.grad(ref, reference_logits)
    torch.testing.assert_close(loss.double(), ref, **TOL)
    torch.testing.assert_close(grad.double(), want, **TOL)
    outside = torch.ones_like(grad, dtype=torch.bool).scatter_(1, cache.indices, False)
    assert grad[outside].abs().max() > 1e-4  # the tail's gradient reaches the other tokens


@pytest.mark.parametrize("kind", KD_KINDS)
def test_tail_stays_finite_when_the_top_k_hold_almost_all_the_mass(kind):
    g = torch.Generator().manual_seed(5)
    n, vocab, k = 4, 50, 3
    # Teacher and student peaked enough that their top-k mass rounds to 1 in fp32.
    teacher = torch.log_softmax(torch.randn(n, vocab, generator=g) * 60, -1)
    assert (teacher.topk(k, -1).values.float().logsumexp(-1) >= -1e-7).all()
    for student in (teacher * 1.0, torch.randn(n, vocab, generator=g) * 60):
        logits = student.clone().requires_grad_()
        loss = _identity_loss(logits, _cache(teacher, k, 1.0), KDSpec(kind=kind, topk_mode="tail"))
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and loss.item() > -1e-4
        assert torch.isfinite(grad).all()


def test_log1mexp_is_accurate_on_both_branches_and_finite_at_zero():
    points = [-1e-6, -0.1, -0.69, -0.7, -5.0, -40.0]
    with decimal.localcontext() as exact:
        exact.prec = 50
        want = [float((1 - decimal.Decimal(x).exp()).ln()) for x in points]
    got = log1mexp(torch.tensor(points, dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)
    at_one = log1mexp(torch.tensor([0.0, 1e-7]))  # a mass that rounds to 1, or above
    assert torch.isfinite(at_one).all() and (at_one < -15).all()


def test_tail_forward_kl_never_exceeds_the_full_kl():
    g = torch.Generator().manual_seed(7)
    n, vocab = 32, 200
    teacher = torch.log_softmax(torch.randn(n, vocab, generator=g) * 3, -1)
    logits = torch.randn(n, vocab, generator=g) * 3
    full = reference_divergence("forward_kl", teacher, torch.log_softmax(logits, -1), 0.5)
    spec = KDSpec(chunk_tokens=1, topk_mode="tail")
    for k in (1, 5, 50, 199):
        per_token = torch.stack(
            [
                _identity_loss(logits[i : i + 1], _cache(teacher[i : i + 1], k, 1.0), spec)
                for i in range(n)
            ]
        )
        assert (per_token <= full + 1e-5).all()
        assert per_token.sum() > 0


def test_unknown_topk_mode_is_rejected():
    with pytest.raises(ValueError, match="topk_mode"):
        KDSpec(topk_mode="tail_bucket")
