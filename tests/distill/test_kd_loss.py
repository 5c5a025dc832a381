"""Chunked distillation losses (leafpipe.distill.kd_loss) against a direct full-logit reference."""

import math

import pytest
import torch
import torch.nn.functional as F
from kd_tensors import HS, B, T, V, make_tensors, reference_divergence, token_mask
from tiny_models import tiny_model
from torch import nn

from leafpipe.distill import kd_loss
from leafpipe.distill.divergences import forward_kl, jsd, reverse_kl
from leafpipe.distill.heads import SoftcappedHead, output_head, response_hidden
from leafpipe.distill.kd_loss import ce_loss_sum, kd_loss_sum
from leafpipe.distill.reference_loss import token_kl
from leafpipe.distill.spec import KD_KINDS, KDSpec
from leafpipe.distill.topk import teacher_topk
from leafpipe.text.batching import collate
from leafpipe.text.templates import encode_sample

CHUNKS = (0, 1, 3, 7, 10_000)
TOL = dict(atol=1e-5, rtol=1e-5)


LAYOUTS = ("full", "right_padding", "empty_row")


def reference(sh, shead, th, thead, mask, kind="forward_kl", tau=1.0, beta=0.5):
    """The direct full-logit computation: every logit, log-softmax at tau, divergences, masked
    sum."""
    zs = shead(sh)[:, :-1]
    with torch.no_grad():
        zt = thead(th)[:, :-1, : zs.shape[-1]]
    log_q = torch.log_softmax(zs[mask].float() / tau, -1)
    log_p = torch.log_softmax(zt[mask].float() / tau, -1)
    return reference_divergence(kind, log_p, log_q, beta).sum() * tau**2


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


def student_head(linear: nn.Linear, fused: bool) -> nn.Module:
    """`linear` as is (the fused path) or wrapped, so that it is not a plain `nn.Linear` (the
    checkpointed path)."""
    return linear if fused else nn.Sequential(linear)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("kind", KD_KINDS)
def test_chunked_loss_and_gradients_match_full_logit_reference(kind, chunk, layout):
    sh, shead, th, thead = make_tensors()
    mask = token_mask(layout)
    spec = KDSpec(kind=kind, chunk_tokens=chunk)
    loss = kd_loss_sum(sh, shead, th, thead, mask, spec)
    ref = reference(sh, shead, th, thead, mask, kind)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(_grads(loss, sh, shead.weight), _grads(ref, sh, shead.weight)):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("kind", KD_KINDS)
@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_temperature_matches_reference(kind, tau):
    sh, shead, th, thead = make_tensors(1)
    mask = token_mask("right_padding")
    loss = kd_loss_sum(
        sh, shead, th, thead, mask, KDSpec(kind=kind, temperature=tau, beta=0.3, chunk_tokens=4)
    )
    ref = reference(sh, shead, th, thead, mask, kind, tau=tau, beta=0.3)
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(_grads(loss, sh, shead.weight), _grads(ref, sh, shead.weight)):
        torch.testing.assert_close(got, want, **TOL)


def test_temperature_squared_scaling():
    # Logits scaled by tau at temperature tau give the unsoftened divergence, times tau².
    sh, shead, th, thead = make_tensors(2)
    mask, tau = token_mask("full"), 3.0
    plain = kd_loss_sum(sh, shead, th, thead, mask, KDSpec(chunk_tokens=5))
    scaled = kd_loss_sum(
        sh * tau, shead, th * tau, thead, mask, KDSpec(temperature=tau, chunk_tokens=5)
    )
    torch.testing.assert_close(scaled, tau**2 * plain, **TOL)


@pytest.mark.parametrize("fused", [True, False])
def test_caller_normalisation_scales_the_gradients(fused):
    sh, shead, th, thead = make_tensors(3)
    head = student_head(shead, fused)
    mask = token_mask("right_padding")
    n = int(mask.sum())
    loss = kd_loss_sum(sh, head, th, thead, mask, KDSpec(chunk_tokens=3)) / n
    ref = reference(sh, head, th, thead, mask) / n
    for got, want in zip(_grads(loss, sh, shead.weight), _grads(ref, sh, shead.weight)):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("kind", KD_KINDS)
def test_teacher_receives_no_gradient(kind):
    sh, shead, th, thead = make_tensors(4)
    kd_loss_sum(
        sh, shead, th, thead, token_mask("right_padding"), KDSpec(kind=kind, chunk_tokens=3)
    ).backward()
    assert th.grad is None and thead.weight.grad is None
    assert sh.grad is not None and shead.weight.grad is not None


def test_positions_outside_the_mask_do_not_matter():
    sh, shead, th, thead = make_tensors(5)
    mask = token_mask("right_padding")
    loss = kd_loss_sum(sh, shead, th, thead, mask, KDSpec(chunk_tokens=3))
    noisy_s, noisy_t = sh.detach().clone(), th.detach().clone()
    pad = torch.cat(
        [~mask, torch.ones(B, 1, dtype=torch.bool)], 1
    )  # untrained positions, last one included
    noisy_s[pad] = 1e3
    noisy_t[pad] = -1e3
    torch.testing.assert_close(
        kd_loss_sum(noisy_s, shead, noisy_t, thead, mask, KDSpec(chunk_tokens=3)), loss
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # the student model's
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("chunk", [0, 3])
@pytest.mark.parametrize("kind", KD_KINDS)
def test_no_trained_tokens_gives_zero_and_zero_gradients(kind, chunk, fused, dtype):
    sh, shead, th, thead = make_tensors(6)
    sh = sh.detach().to(dtype).requires_grad_()
    shead.to(dtype)
    head = student_head(shead, fused)
    spec = KDSpec(kind=kind, chunk_tokens=chunk)
    loss = kd_loss_sum(sh, head, th, thead, token_mask("nothing"), spec)
    assert loss.item() == 0.0 and loss.dtype == torch.float32  # fp32 whatever the model's dtype
    loss.backward()
    assert sh.grad is not None and not sh.grad.any()


@pytest.mark.parametrize("kind", KD_KINDS)
def test_divergence_functions_give_the_divergence_and_its_logit_gradient(kind):
    # The per-category functions that the top-k "tail" mode applies to its k + 1 categories.
    g, beta = torch.Generator().manual_seed(24), 0.3
    log_p = torch.log_softmax(torch.randn(2, 5, generator=g) * 2, -1)
    s = (torch.randn(2, 5, generator=g) * 2).requires_grad_()
    want = reference_divergence(kind, log_p, torch.log_softmax(s, -1), beta)
    (want_grad,) = torch.autograd.grad(want.sum(), s)
    divergence = {
        "forward_kl": forward_kl,
        "reverse_kl": reverse_kl,
        "jsd": lambda log_p, log_q, need_grad: jsd(log_p, log_q, beta, need_grad),
    }[kind]
    for need_grad in (True, False):
        log_q = torch.log_softmax(s.detach(), -1)
        loss, grad = divergence(log_p.clone(), log_q, need_grad)
        torch.testing.assert_close(loss, want.detach(), **TOL)
        if need_grad:
            torch.testing.assert_close(grad, want_grad, **TOL)
        else:
            assert grad is None


def test_jsd_at_half_is_symmetric_and_bounded_by_log_2():
    sh, shead, th, thead = make_tensors(7)
    # Give both sides the same width so they can swap roles.
    th = torch.randn(B, T, HS, generator=torch.Generator().manual_seed(8))
    thead = nn.Linear(HS, V, bias=False)
    mask = token_mask("right_padding")
    spec = KDSpec(kind="jsd", beta=0.5, chunk_tokens=3)
    ab = kd_loss_sum(sh, shead, th, thead, mask, spec)
    ba = kd_loss_sum(th, thead, sh, shead, mask, spec)
    torch.testing.assert_close(ab, ba, **TOL)
    assert 0 < ab.item() <= math.log(2) * int(mask.sum())
    # Identical distributions: zero.
    same = kd_loss_sum(sh, shead, sh.detach(), shead, mask, spec)
    assert abs(same.item()) < 1e-5


def test_jsd_limits_are_the_scaled_kls():
    sh, shead, th, thead = make_tensors(9)
    mask = token_mask("right_padding")
    fkl = kd_loss_sum(sh, shead, th, thead, mask, KDSpec(kind="forward_kl"))
    rkl = kd_loss_sum(sh, shead, th, thead, mask, KDSpec(kind="reverse_kl"))
    # The ratios converge slowly (first-order terms in beta * p / q); fp32 limits how far to go.
    eps = 1e-5
    near0 = kd_loss_sum(sh, shead, th, thead, mask, KDSpec(kind="jsd", beta=eps)) / eps
    near1 = kd_loss_sum(sh, shead, th, thead, mask, KDSpec(kind="jsd", beta=1 - eps)) / eps
    torch.testing.assert_close(near0, fkl, rtol=2e-2, atol=0)
    torch.testing.assert_close(near1, rkl, rtol=2e-2, atol=0)


@pytest.mark.parametrize("kind", KD_KINDS)
def test_topk_with_k_equal_to_the_vocabulary_is_the_full_loss(kind):
    sh, shead, th, thead = make_tensors(10)
    mask = token_mask("empty_row")
    spec = KDSpec(kind=kind, temperature=1.5, chunk_tokens=4)
    cache = teacher_topk(th, thead, mask, k=V, temperature=1.5, chunk_tokens=5)
    assert cache.indices.shape == cache.logprobs.shape == (int(mask.sum()), V)
    assert cache.indices.dtype == torch.int64 and cache.logprobs.dtype == torch.float32
    loss = kd_loss_sum(sh, shead, None, None, mask, spec, teacher_topk=cache)
    ref = reference(sh, shead, th, thead, mask, kind, tau=1.5)
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(_grads(loss, sh, shead.weight), _grads(ref, sh, shead.weight)):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("kind", KD_KINDS)
def test_topk_uses_the_teacher_renormalised_over_its_k_tokens(kind):
    sh, shead, th, thead = make_tensors(11)
    mask, k, tau, beta = token_mask("right_padding"), 5, 2.0, 0.25
    cache = teacher_topk(th, thead, mask, k=k, temperature=tau, chunk_tokens=0)
    # The cache holds true log-probs (over the full vocabulary), so they sum to less than 1.
    full = torch.log_softmax(thead(th)[:, :-1][mask] / tau, -1)
    torch.testing.assert_close(cache.logprobs, full.topk(k, -1).values.detach(), **TOL)
    assert (cache.logprobs.exp().sum(-1) < 1).all()

    loss = kd_loss_sum(
        sh,
        shead,
        None,
        None,
        mask,
        KDSpec(kind=kind, temperature=tau, beta=beta, chunk_tokens=3),
        teacher_topk=cache,
    )
    log_pk = torch.log_softmax(cache.logprobs, -1)
    s = shead(sh)[:, :-1][mask] / tau
    if kind == "forward_kl":  # the student's full-vocabulary log-probs at the k tokens
        per_token = (
            log_pk.exp() * (log_pk - torch.log_softmax(s, -1).gather(1, cache.indices))
        ).sum(-1)
    else:  # the student restricted to the k tokens and renormalised
        per_token = reference_divergence(
            kind, log_pk, torch.log_softmax(s.gather(1, cache.indices), -1), beta
        )
    ref = per_token.sum() * tau**2
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(_grads(loss, sh, shead.weight), _grads(ref, sh, shead.weight)):
        torch.testing.assert_close(got, want, **TOL)


def test_topk_checks_rows_and_temperature():
    sh, shead, th, thead = make_tensors(12)
    mask = token_mask("right_padding")
    cache = teacher_topk(th, thead, mask, k=4, temperature=1.0, chunk_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss_sum(sh, shead, None, None, mask, KDSpec(temperature=2.0), teacher_topk=cache)
    with pytest.raises(ValueError, match="rows"):
        kd_loss_sum(sh, shead, None, None, token_mask("full"), KDSpec(), teacher_topk=cache)
    for hidden, head in ((th, thead), (th, None), (None, thead)):
        with pytest.raises(ValueError, match="not both"):
            kd_loss_sum(sh, shead, hidden, head, mask, KDSpec(), teacher_topk=cache)
    for hidden, head in ((th, None), (None, thead)):  # no cache: both parts are needed
        with pytest.raises(ValueError, match="teacher_hidden and teacher_head"):
            kd_loss_sum(sh, shead, hidden, head, mask, KDSpec())
    cache.to("cpu")  # the cache moves as one


@pytest.mark.parametrize("kind", KD_KINDS)
def test_larger_teacher_vocabulary_is_truncated_to_the_students(kind):
    sh, shead, th, thead = make_tensors(13, teacher_vocab=V + 9)
    mask = token_mask("right_padding")
    loss = kd_loss_sum(sh, shead, th, thead, mask, KDSpec(kind=kind, chunk_tokens=2))
    ref = reference(
        sh, shead, th, thead, mask, kind
    )  # the reference keeps the teacher's first V logits
    torch.testing.assert_close(loss, ref, **TOL)
    # The cached mode truncates the same way when told the student's vocabulary.
    cache = teacher_topk(th, thead, mask, k=V, temperature=1.0, chunk_tokens=2, vocab_size=V)
    torch.testing.assert_close(
        kd_loss_sum(sh, shead, None, None, mask, KDSpec(kind=kind), teacher_topk=cache), ref, **TOL
    )
    with pytest.raises(ValueError, match="vocabulary"):
        kd_loss_sum(
            sh,
            shead,
            None,
            None,
            mask,
            KDSpec(kind=kind),
            teacher_topk=teacher_topk(th, thead, mask, k=V + 9, temperature=1.0, chunk_tokens=0),
        )


def test_smaller_teacher_vocabulary_raises_naming_both_sizes():
    sh, shead, th, thead = make_tensors(14, teacher_vocab=V - 3)
    with pytest.raises(ValueError, match=rf"\({V - 3}\).*\({V}\)"):
        kd_loss_sum(sh, shead, th, thead, token_mask("full"), KDSpec())


@pytest.mark.parametrize("chunk", CHUNKS)
def test_ce_loss_sum_equals_cross_entropy_on_trained_tokens(chunk):
    sh, shead, _, _ = make_tensors(15, bias=True)
    mask = token_mask("empty_row")
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    loss = ce_loss_sum(sh, shead, ids, mask, chunk)
    ref = F.cross_entropy(shead(sh)[:, :-1][mask], ids[:, 1:][mask], reduction="sum")
    torch.testing.assert_close(loss, ref, **TOL)
    params = (sh, shead.weight, shead.bias)
    for got, want in zip(_grads(loss, *params), _grads(ref, *params)):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("kind", KD_KINDS)
def test_student_bias_gets_its_gradient(kind):
    sh, shead, th, thead = make_tensors(16, bias=True)
    mask = token_mask("right_padding")
    loss = kd_loss_sum(sh, shead, th, thead, mask, KDSpec(kind=kind, chunk_tokens=3))
    ref = reference(sh, shead, th, thead, mask, kind)
    params = (sh, shead.weight, shead.bias)
    for got, want in zip(_grads(loss, *params), _grads(ref, *params)):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("kind", KD_KINDS)
def test_soft_capped_heads_match_reference(kind):
    sh, shead, th, thead = make_tensors(17)
    s_capped, t_capped = SoftcappedHead(shead, 2.0), SoftcappedHead(thead, 3.0)
    mask = token_mask("right_padding")
    loss = kd_loss_sum(
        sh, s_capped, th, t_capped, mask, KDSpec(kind=kind, temperature=1.5, chunk_tokens=3)
    )
    ref = reference(sh, s_capped, th, t_capped, mask, kind, tau=1.5)
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(_grads(loss, sh, shead.weight), _grads(ref, sh, shead.weight)):
        torch.testing.assert_close(got, want, **TOL)
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    ce = ce_loss_sum(sh, s_capped, ids, mask, 4)
    torch.testing.assert_close(
        ce, F.cross_entropy(s_capped(sh)[:, :-1][mask], ids[:, 1:][mask], reduction="sum")
    )


@pytest.mark.parametrize("kind", KD_KINDS)
@pytest.mark.parametrize("capped", [False, True])
def test_other_head_modules_fall_back_to_checkpointing(kind, capped):
    sh, shead, th, thead = make_tensors(18, bias=True)
    head: nn.Module = nn.Sequential(shead)  # not a plain nn.Linear: the checkpointed path
    if capped:
        head = SoftcappedHead(head, 2.5)
    mask = token_mask("empty_row")
    loss = kd_loss_sum(sh, head, th, thead, mask, KDSpec(kind=kind, chunk_tokens=3))
    ref = reference(sh, head, th, thead, mask, kind)
    torch.testing.assert_close(loss, ref, **TOL)
    params = (sh, shead.weight, shead.bias)
    for got, want in zip(_grads(loss, *params), _grads(ref, *params)):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kind", KD_KINDS)
def test_without_gradients_only_the_loss_is_computed(kind, fused, frozen, monkeypatch):
    # No chunk computes a gradient that nothing will use: under torch.no_grad (the validation
    # loss), or with grad mode on when neither the hidden states nor the head require one.
    asked = []
    chunk_loss = kd_loss._chunk_from_logits

    def spy(make_logits, cap, tau, target, state, need_grad):
        asked.append(need_grad)
        return chunk_loss(make_logits, cap, tau, target, state, need_grad)

    monkeypatch.setattr(kd_loss, "_chunk_from_logits", spy)
    sh, shead, th, thead = make_tensors(19, bias=True)
    mask = token_mask("right_padding")  # 13 trained tokens: 5 chunks of at most 3
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(2))
    want_kd = reference(sh, shead, th, thead, mask, kind).detach()
    want_ce = F.cross_entropy(shead(sh)[:, :-1][mask], ids[:, 1:][mask], reduction="sum").detach()
    head = student_head(shead, fused)
    if frozen:
        sh = sh.detach()
        shead.requires_grad_(False)
    with torch.set_grad_enabled(frozen):
        kd = kd_loss_sum(sh, head, th, thead, mask, KDSpec(kind=kind, chunk_tokens=3))
        ce = ce_loss_sum(sh, head, ids, mask, 3)
    assert not kd.requires_grad and not ce.requires_grad
    torch.testing.assert_close(kd, want_kd, **TOL)
    torch.testing.assert_close(ce, want_ce, **TOL)
    assert asked == [False] * 10


def test_mismatched_shapes_raise():
    sh, shead, th, thead = make_tensors(20)
    with pytest.raises(ValueError, match="T-1"):
        kd_loss_sum(sh, shead, th, thead, torch.ones(B, T, dtype=torch.bool), KDSpec())
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        kd_loss_sum(sh, shead, th[:, :-1], thead, token_mask("full"), KDSpec())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kind="kl"),
        dict(temperature=0.0),
        dict(temperature=float("inf")),
        dict(beta=0.0),
        dict(beta=1.0),
        dict(chunk_tokens=-1),
        dict(chunk_tokens=2.5),
        dict(head_precision="fp16"),
    ],
)
def test_spec_validation(kwargs):
    with pytest.raises(ValueError):
        KDSpec(**kwargs)


# --- real (tiny) models
# ------------------------------------------------------------------------------


def _batch(tokenizer, samples):
    encoded = [encode_sample(tokenizer, q, a) for q, a in samples]
    encoded[1] = encode_sample(
        tokenizer, samples[1][0], samples[1][1][:20]
    )  # a shorter row: right padding
    return collate(encoded, tokenizer.pad_token_id)


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen2"])
def test_response_hidden_is_what_the_lm_head_consumes(family, request, tokenizer, samples):
    model = request.getfixturevalue(family)(seed=0)
    batch = _batch(tokenizer, samples)
    with torch.no_grad():
        hidden = response_hidden(model, batch.input_ids, batch.attention_mask)
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        )
    assert hidden.shape == (*batch.input_ids.shape, model.config.hidden_size)
    torch.testing.assert_close(hidden, out.hidden_states[-1])
    torch.testing.assert_close(output_head(model)(hidden), out.logits)


def test_output_head_applies_the_configs_final_logit_softcap(tokenizer):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    model = tiny_model(
        Gemma2Config, Gemma2ForCausalLM, tokenizer, 0, head_dim=8, final_logit_softcapping=0.5
    )
    ids = torch.randint(0, len(tokenizer), (2, 7))
    mask = torch.ones_like(ids)
    head = output_head(model)
    assert isinstance(head, SoftcappedHead) and head.cap == 0.5
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(head(response_hidden(model, ids, mask)), logits)


def test_tied_student_and_real_teacher_match_token_kl_end_to_end(
    tiny_llama, tiny_qwen2, tokenizer, samples
):
    student = tiny_llama(seed=1, tie_word_embeddings=True)
    teacher = tiny_qwen2(seed=2, hidden_size=48, num_attention_heads=4, num_key_value_heads=2)
    assert student.lm_head.weight is student.get_input_embeddings().weight
    batch = _batch(tokenizer, samples)
    n_per_row = batch.target_mask.sum(-1)

    loss = kd_loss_sum(
        response_hidden(student, batch.input_ids, batch.attention_mask),
        output_head(student),
        response_hidden(teacher, batch.input_ids, batch.attention_mask),
        output_head(teacher),
        batch.target_mask,
        KDSpec(temperature=2.0, chunk_tokens=16),
    )
    grads = torch.autograd.grad(loss, list(student.parameters()))
    s_logits = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    t_logits = teacher(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask
    ).logits.detach()
    ref = (
        token_kl(t_logits[:, :-1], s_logits[:, :-1], batch.target_mask, temperature=2.0) * n_per_row
    ).sum()
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(grads, torch.autograd.grad(ref, list(student.parameters()))):
        torch.testing.assert_close(got, want, **TOL)
    assert all(p.grad is None for p in teacher.parameters())


def test_fused_loss_backpropagates_once():
    sh, shead, th, thead = make_tensors(21)
    loss = kd_loss_sum(sh, shead, th, thead, token_mask("full"), KDSpec(chunk_tokens=4))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        loss.backward()


@pytest.mark.parametrize("kind", KD_KINDS)
def test_teacher_hidden_states_from_inference_mode_are_accepted(kind):
    # The trainer runs the teacher under torch.inference_mode and passes its hidden states
    # unchanged.
    sh, shead, th, thead = make_tensors(22)
    mask = token_mask("right_padding")
    with torch.inference_mode():
        th_inference = th.detach() * 1.0
    assert th_inference.is_inference()
    spec = KDSpec(kind=kind, chunk_tokens=3)
    loss = kd_loss_sum(sh, shead, th_inference, thead, mask, spec)
    loss.backward()
    torch.testing.assert_close(
        loss.detach(), reference(sh, shead, th, thead, mask, kind).detach(), **TOL
    )
    cache = teacher_topk(th_inference, thead, mask, k=5, temperature=1.0, chunk_tokens=3)
    kd_loss_sum(sh, shead, None, None, mask, spec, teacher_topk=cache).backward()


@pytest.mark.parametrize("fused", [True, False])  # a cast weight, or a head run under autocast
def test_bf16_head_products_use_the_bf16_rounded_weight(fused):
    # One-hot hidden states make each logit one weight entry, so with head_precision "bf16" the
    # logits are exactly those of the bf16-rounded weight: the loss is the fp32 reference's with
    # that weight, and not the one with the fp32 weight.
    _, shead, th, thead = make_tensors(25)
    picks = torch.randint(0, HS, (B, T), generator=torch.Generator().manual_seed(25))
    sh = F.one_hot(picks, HS).float().requires_grad_()
    rounded = nn.Linear(HS, V, bias=False)
    with torch.no_grad():
        rounded.weight.copy_(shead.weight.bfloat16())
    mask = token_mask("right_padding")
    head = student_head(shead, fused)
    loss = kd_loss_sum(sh, head, th, thead, mask, KDSpec(chunk_tokens=3, head_precision="bf16"))
    ref = reference(sh, rounded, th, thead, mask)
    torch.testing.assert_close(loss, ref, **TOL)
    assert not torch.allclose(loss, reference(sh, shead, th, thead, mask), **TOL)
    # The gradients are the reference's up to bf16's rounding of the logits' gradient.
    for got, want in zip(_grads(loss, sh, shead.weight), _grads(ref, sh, rounded.weight)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=1e-2, rtol=1e-2)


def test_torchs_default_dtype_does_not_change_the_loss():
    # The loss and the weight gradient are summed in buffers made fp32 by name, not by default.
    sh, shead, th, thead = make_tensors(26)
    mask = token_mask("right_padding")
    ref = reference(sh, shead, th, thead, mask)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        loss = kd_loss_sum(sh, shead, th, thead, mask, KDSpec(chunk_tokens=3))
        grads = _grads(loss, sh, shead.weight)
    finally:
        torch.set_default_dtype(default)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, **TOL)
    for got, want in zip(grads, _grads(ref, sh, shead.weight)):
        torch.testing.assert_close(got, want, **TOL)


def test_hidden_states_in_another_dtype_than_the_heads():
    # Under autocast the hidden states come out bf16 while the heads stay fp32.
    sh, shead, th, thead = make_tensors(23)
    mask = token_mask("right_padding")
    sh16 = sh.detach().bfloat16().requires_grad_()
    loss = kd_loss_sum(sh16, shead, th.bfloat16(), thead, mask, KDSpec(chunk_tokens=3))
    sh32 = sh16.detach().float().requires_grad_()
    ref = reference(sh32, shead, th.bfloat16().float(), thead, mask)
    torch.testing.assert_close(loss, ref, **TOL)
    (g16,) = _grads(loss, sh16)
    (g32,) = _grads(ref, sh32)
    assert g16.dtype == torch.bfloat16
    torch.testing.assert_close(g16, g32.bfloat16())
