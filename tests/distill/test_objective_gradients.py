"""The distillation objective at the gradient (docs/training-scheme.md): the gradient one optimiser
step of the trainer hands to clipping is that of the documented loss, built here with plain torch.

Per trained token ℓ = τ² D(p_T, p_S), p = softmax(logits / τ), D the divergence `distill.kd`
names: forward KL(p_T ‖ p_S), reverse KL(p_S ‖ p_T), or the JSD of M = β p_T + (1 − β) p_S.
A step's loss is (Σ_orig ℓ + λ Σ_cf ℓ) / (N_orig + λ N_cf) with `all`, and
Σ_orig ℓ / N_orig + λ Σ_cf ℓ / N_cf with `draw_one`, the N counting the whole step's trained
tokens, so accumulated micro-batches and data-parallel shares add up to it.
"""

from dataclasses import replace

import pytest
import torch
from distill_groups import many_groups, trained_mask
from kd_tensors import reference_divergence
from step_gradients import first_step_gradients, two_process_gradients

from leafpipe.distill.spec import ALL, DRAW_ONE, KD_KINDS, MODES, DistillSpec, KDSpec
from leafpipe.text.templates import encode_sample

# λ, τ and β away from 1, 1 and 0.5, so that dropping any of them changes the gradient.
LAM, TAU, BETA = 0.3, 2.0, 0.3
# Weights drawn wider than the default 0.02: next-token distributions far from uniform, where
# the two KL directions and their gradients differ by tens of per cent (near uniform they agree
# to second order).
INIT = 0.1


def one_step(mode: str, kind: str, *, tau: float = TAU, micro_batch: int = 2) -> DistillSpec:
    """One optimiser step over every item of `many_groups(samples, 3)` (3 originals, 2 with a
    counterfactual): 5 samples with `all`, 3 groups with `draw_one` (each draws its only
    counterfactual), accumulated in micro-batches of `micro_batch` items. No clipping."""
    return DistillSpec(
        lam=LAM,
        counterfactuals=mode,
        kd=KDSpec(kind=kind, temperature=tau, beta=BETA),
        epochs=1,
        global_batch=6,
        micro_batch=micro_batch,
        lr=1e-3,
        max_grad_norm=0,
    )


@pytest.fixture
def models(tiny_llama):
    """Teacher and student, fresh: (teacher, student) of the same initial weights at each call."""
    return lambda: (tiny_llama(0, initializer_range=INIT), tiny_llama(1, initializer_range=INIT))


@pytest.fixture
def groups(samples):
    return many_groups(samples, 3)


def reference_gradients(teacher, student, tokenizer, groups, spec) -> list[torch.Tensor]:
    """The student's gradient of the documented loss (module docstring) over every sample of
    `groups`, each run alone through plain forward passes, its trained tokens marked by hand."""
    kd = spec.kd
    sums, counts = {"orig": 0.0, "cf": 0.0}, {"orig": 0, "cf": 0}
    texts = [("orig", g.original) for g in groups] + [
        ("cf", cf) for g in groups for cf in g.counterfactuals
    ]
    for term, text in texts:
        sample = encode_sample(tokenizer, *text)
        ids, mask = torch.tensor([sample.input_ids]), trained_mask(sample)[0]
        with torch.no_grad():
            teacher_logits = teacher(input_ids=ids).logits[0, :-1][mask]
        student_logits = student(input_ids=ids).logits[0, :-1][mask]
        log_p = torch.log_softmax(teacher_logits / kd.temperature, dim=-1)
        log_q = torch.log_softmax(student_logits / kd.temperature, dim=-1)
        per_token = kd.temperature**2 * reference_divergence(kd.kind, log_p, log_q, kd.beta)
        sums[term] = sums[term] + per_token.sum()
        counts[term] += int(mask.sum())
    lam = spec.lam
    if spec.counterfactuals == ALL:
        loss = (sums["orig"] + lam * sums["cf"]) / (counts["orig"] + lam * counts["cf"])
    else:
        loss = sums["orig"] / counts["orig"] + lam * sums["cf"] / counts["cf"]
    loss.backward()
    return [p.grad for p in student.parameters()]


def distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """‖a − b‖ / ‖b‖ over all parameters at once."""
    diff = torch.cat([(x - y).flatten() for x, y in zip(a, b)])
    return (diff.norm() / torch.cat([y.flatten() for y in b]).norm()).item()


def assert_same_gradients(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    """Equal up to fp32 rounding (the trainer sums chunks and padded micro-batches in another
    order), parameter by parameter."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", KD_KINDS)
@pytest.mark.parametrize("mode", MODES)
def test_a_step_trains_the_gradient_of_the_documented_objective(
    tokenizer, models, groups, mode, kind
):
    """Originals and counterfactuals, λ = 0.3, τ = 2, each divergence, each normalisation, in
    accumulated and padded micro-batches of two items."""
    spec = one_step(mode, kind)
    got = first_step_gradients(*models(), tokenizer, groups, spec)
    want = reference_gradients(*models(), tokenizer, groups, spec)
    assert_same_gradients(got, want)


@pytest.mark.parametrize(
    "kind, other", [("forward_kl", "reverse_kl"), ("reverse_kl", "forward_kl")]
)
def test_each_kl_setting_trains_its_own_direction(tokenizer, models, groups, kind, other):
    """forward_kl is KL(teacher ‖ student), reverse_kl KL(student ‖ teacher), at τ = 1: here the
    two directions' gradients differ by far more than rounding, and the step matches its own."""
    spec = one_step(DRAW_ONE, kind, tau=1.0)
    got = first_step_gradients(*models(), tokenizer, groups, spec)
    own = reference_gradients(*models(), tokenizer, groups, spec)
    swapped = replace(spec, kd=replace(spec.kd, kind=other))
    assert distance(reference_gradients(*models(), tokenizer, groups, swapped), own) > 0.2
    assert distance(got, own) < 1e-5
    assert_same_gradients(got, own)


def test_two_processes_sum_to_the_gradient_of_the_whole_step(tokenizer, models, groups, tmp_path):
    """Two gloo processes, each accumulating its uneven share (2 groups and 1) one group at a
    time: after the trainer's sum over them, each holds the whole step's gradient."""
    spec = one_step(DRAW_ONE, "jsd", micro_batch=1)
    ranks = two_process_gradients(*models(), tokenizer, groups, spec, tmp_path)
    want = reference_gradients(*models(), tokenizer, groups, spec)
    for got in ranks:
        assert_same_gradients(got, want)
