"""The paper's training scheme (docs/training-scheme.md): every counterfactual a sample of its own
each epoch, λ-weighted token means, and response-level counterfactuals trained after their pruned
step only."""

import math

import pytest
import torch
from distill_groups import DISTRACTORS, read_metrics, trained_mask
from step_gradients import first_step_gradients

from leafpipe.distill.data import (
    MODES,
    ORIGINAL_REF,
    DistillGroup,
    Text,
    encode_groups,
    epoch_plan,
    validation_plan,
    validation_split,
)
from leafpipe.distill.objective import combined_loss, term_weights, terms
from leafpipe.distill.reference_loss import token_kl
from leafpipe.distill.spec import DistillSpec
from leafpipe.distill.trainer import _Trainer, distill
from leafpipe.text.batching import collate
from leafpipe.text.templates import encode_sample


def groups_with_counterfactuals(samples, n: int = 12) -> list[DistillGroup]:
    """n groups with 0 to 3 counterfactuals each: the distractor removed, or a response-level
    one (the first step pruned, trained from the second)."""
    groups = []
    for k in range(n):
        (instruction, response), distractor = samples[k % 2], DISTRACTORS[k % 2]
        instruction = "Think. " * (k // 2) + instruction
        later = response.index("Step 2")
        cfs = [
            Text(instruction.replace(distractor, ""), response),
            Text(instruction, "Step 1: pruned.\n" + response[later:], len("Step 1: pruned.\n")),
            Text(instruction + " Be brief.", response),
        ][: k % 4]
        groups.append(DistillGroup((instruction, response), cfs, source_id=f"g{k}"))
    return groups


def refs(steps) -> list[tuple[int, int]]:
    return [ref for step in steps for micro in step for item in micro for ref in item]


# --- the plan -----------------------------------------------------------------------------------


def test_all_makes_every_original_and_counterfactual_a_sample_once_per_epoch(tokenizer, samples):
    groups = groups_with_counterfactuals(samples)
    encoded = encode_groups(tokenizer, groups)
    train, val = validation_split(groups, 0.3)
    assert train and val
    expected = [(i, ORIGINAL_REF) for i in train] + [
        (i, j) for i in train for j in range(len(groups[i].counterfactuals))
    ]
    plans = [
        epoch_plan(
            encoded, train, epoch, seed=0, global_batch=4, micro_batch=2, lam=0.5, mode="all"
        )
        for epoch in (1, 2, 3)
    ]
    for steps in plans:
        assert sorted(refs(steps)) == sorted(expected)  # each exactly once; held-out groups never
        assert len(steps) == math.ceil(len(expected) / 4)
        assert all(len(item) == 1 for step in steps for micro in step for item in micro)
        assert all(sum(map(len, step)) <= 4 and all(len(m) <= 2 for m in step) for step in steps)
    assert refs(plans[0]) != refs(plans[1])  # shuffled anew each epoch ...
    again = epoch_plan(
        encoded, train, 2, seed=0, global_batch=4, micro_batch=2, lam=0.5, mode="all"
    )
    assert again == plans[1]  # ... as a function of (seed, epoch) only
    held_out = [(i, ORIGINAL_REF) for i in val] + [
        (i, j) for i in val for j in range(len(groups[i].counterfactuals))
    ]
    assert sorted(refs([validation_plan(encoded, val, seed=0, lam=0.5, mode="all")])) == sorted(
        held_out
    )


def test_draw_one_pairs_each_original_with_one_of_its_counterfactuals(tokenizer, samples):
    groups = groups_with_counterfactuals(samples)
    encoded = encode_groups(tokenizer, groups)
    train = list(range(len(groups)))
    drawn = set()
    for epoch in range(1, 6):
        steps = epoch_plan(
            encoded, train, epoch, seed=0, global_batch=4, micro_batch=2, lam=0.5, mode="draw_one"
        )
        items = [item for step in steps for micro in step for item in micro]
        assert sorted(item[0] for item in items) == [(i, ORIGINAL_REF) for i in train]
        for (i, _), *cf in items:
            assert len(cf) == (1 if groups[i].counterfactuals else 0)
            assert all(g == i for g, _ in cf)
            drawn.update(cf)
    assert len(drawn) > sum(
        bool(g.counterfactuals) for g in groups
    )  # the draw changes between epochs


@pytest.mark.parametrize("mode", MODES)
def test_lambda_zero_plans_no_counterfactuals(tokenizer, samples, mode):
    encoded = encode_groups(tokenizer, groups_with_counterfactuals(samples))
    steps = epoch_plan(
        encoded, range(len(encoded)), 1, seed=0, global_batch=4, micro_batch=2, lam=0.0, mode=mode
    )
    assert sorted(refs(steps)) == [(i, ORIGINAL_REF) for i in range(len(encoded))]


# --- the loss -----------------------------------------------------------------------------------


def test_term_weights_are_one_token_mean_or_a_mean_per_term():
    assert term_weights(30, 20, 0.5, "all") == (1 / 40, 0.5 / 40)
    assert term_weights(30, 20, 1.0, "all") == (1 / 50, 1 / 50)  # plain KD over the mixed file
    assert term_weights(30, 0, 0.5, "all") == (1 / 30, 0.5 / 30)
    assert term_weights(0, 20, 0.5, "all") == (1 / 10, 0.5 / 10)  # a step of counterfactuals only
    assert term_weights(30, 20, 0.5, "draw_one") == (1 / 30, 0.5 / 20)
    assert term_weights(0, 20, 0.5, "draw_one") == (1.0, 0.5 / 20)  # a term without tokens
    assert term_weights(30, 0, 0.5, "draw_one") == (1 / 30, 0.5)
    # A step without trained tokens (its loss sums are 0): finite weights, the same in both modes.
    assert term_weights(0, 0, 0.5, "all") == term_weights(0, 0, 0.5, "draw_one") == (1.0, 0.5)


def test_the_loss_is_one_token_mean_or_the_sum_of_the_terms_means():
    sums = dict(orig=6.0, orig_tokens=4, cf=10.0, cf_tokens=4)
    assert terms(sums) == (1.5, 2.5)
    assert combined_loss(sums, 0.5, "all") == (6.0 + 0.5 * 10.0) / (4 + 0.5 * 4)
    assert combined_loss(sums, 0.5, "draw_one") == 1.5 + 0.5 * 2.5
    no_cf = dict(orig=6.0, orig_tokens=4, cf=0.0, cf_tokens=0)  # a set without counterfactuals
    assert terms(no_cf)[0] == 1.5 and math.isnan(terms(no_cf)[1])
    assert combined_loss(no_cf, 0.5, "all") == combined_loss(no_cf, 0.5, "draw_one") == 1.5
    nothing = dict.fromkeys(no_cf, 0)
    assert all(math.isnan(combined_loss(nothing, 0.5, mode)) for mode in MODES)


@pytest.mark.parametrize("mode", MODES)
def test_the_weights_reaching_backward_are_the_hand_computed_ones(
    tokenizer, samples, tiny_llama, monkeypatch, mode
):
    """Each pass's loss sum is multiplied by 1 / (N_orig + λ N_cf) or λ / (N_orig + λ N_cf)
    (all), or 1 / N_orig or λ / N_cf (draw_one), N counting the step's trained tokens."""
    lam = 0.5
    seen: list[tuple[list, float]] = []
    loss_sum = _Trainer._loss_sum

    def recording(self, samples):
        loss = loss_sum(self, samples)
        loss.register_hook(lambda grad: seen.append((samples, grad.item())))
        return loss

    steps = []
    monkeypatch.setattr(_Trainer, "_loss_sum", recording)
    spec = DistillSpec(
        lam=lam, epochs=2, global_batch=4, micro_batch=2, lr=1e-3, counterfactuals=mode
    )
    distill(
        tiny_llama(0),
        tiny_llama(1),
        tokenizer,
        groups_with_counterfactuals(samples, 8),
        spec,
        1,
        on_step=lambda step, row: steps.append(list(seen)) or seen.clear(),
    )
    assert len(steps) == 2 * (
        5 if mode == "all" else 2
    )  # 8 originals + 12 counterfactuals, or 8 groups
    originals = {
        tuple(s.input_ids)
        for g in encode_groups(tokenizer, groups_with_counterfactuals(samples, 8))
        for s in [g.original]
    }
    for passes in steps:
        kinds = [
            ("orig" if tuple(s.input_ids) in originals else "cf", s)
            for samples_, _ in passes
            for s in samples_
        ]
        n = {
            k: sum(int(trained_mask(s).sum()) for kind, s in kinds if kind == k)
            for k in ("orig", "cf")
        }
        for samples_, weight in passes:
            kind = "orig" if tuple(samples_[0].input_ids) in originals else "cf"
            if mode == "all":
                expected = (1.0 if kind == "orig" else lam) / (n["orig"] + lam * n["cf"])
            else:
                expected = 1.0 / n["orig"] if kind == "orig" else lam / n["cf"]
            assert weight == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("lam", [0.5, 1.0])
def test_a_step_trains_the_gradient_of_the_hand_weighted_token_mean(
    tokenizer, samples, tiny_llama, lam
):
    """One step over an original, an instruction-level and a response-level counterfactual, in
    micro-batches of one: the student's gradient is that of (S_orig + λ S_cf) / (N_orig + λ N_cf),
    with the response-level counterfactual's pruned first step as context, not trained."""
    (group,) = groups_with_counterfactuals(samples, 3)[2:]  # two counterfactuals
    assert group.counterfactuals[1].train_from > 0
    spec = DistillSpec(lam=lam, epochs=1, global_batch=3, micro_batch=1, lr=1e-3, max_grad_norm=0)
    trained = first_step_gradients(tiny_llama(0), tiny_llama(1), tokenizer, [group], spec)

    teacher, student = tiny_llama(0), tiny_llama(1)
    sums, counts = {}, {}
    for kind, text in [("orig", group.original), *(("cf", cf) for cf in group.counterfactuals)]:
        sample = encode_sample(tokenizer, *text)
        batch = collate([sample], tokenizer.pad_token_id)
        mask = trained_mask(sample)
        with torch.no_grad():
            t = teacher(input_ids=batch.input_ids).logits[:, :-1]
        s = student(input_ids=batch.input_ids).logits[:, :-1]
        sums[kind] = sums.get(kind, 0) + token_kl(t, s, mask).sum() * mask.sum()
        counts[kind] = counts.get(kind, 0) + int(mask.sum())
    assert counts["cf"] < 2 * counts["orig"]  # the response-level one trains fewer tokens
    loss = (sums["orig"] + lam * sums["cf"]) / (counts["orig"] + lam * counts["cf"])
    loss.backward()
    for got, p in zip(trained, [p for p in student.parameters() if p.requires_grad]):
        torch.testing.assert_close(got, p.grad, rtol=1e-4, atol=1e-7)


def test_a_response_level_counterfactual_step_loss_matches_a_hand_computation(
    tokenizer, samples, tiny_llama, tmp_path
):
    """The step's loss in metrics.csv: only the later steps of the counterfactual count."""
    instruction, response = samples[0]
    later = response.index("Step 2")
    cf = Text(instruction, "Step 1: pruned.\n" + response[later:], len("Step 1: pruned.\n"))
    group = DistillGroup((instruction, response), [cf], source_id="a")
    distill(
        tiny_llama(0),
        tiny_llama(1),
        tokenizer,
        [group],
        DistillSpec(lam=0.5, epochs=1, global_batch=2, micro_batch=2, lr=1e-3),
        1,
        work_dir=tmp_path,
    )
    teacher, student = tiny_llama(0), tiny_llama(1)
    terms = []
    for text in (group.original, cf):
        sample = encode_sample(tokenizer, *text)
        ids = torch.tensor([sample.input_ids])
        mask = trained_mask(sample)
        with torch.no_grad():
            kl = token_kl(
                teacher(input_ids=ids).logits[:, :-1], student(input_ids=ids).logits[:, :-1], mask
            )
        terms.append((kl.item() * int(mask.sum()), int(mask.sum())))
    (s_orig, n_orig), (s_cf, n_cf) = terms
    assert (
        n_cf == len(tokenizer(response[later:], add_special_tokens=False)["input_ids"]) + 1
    )  # + end of turn
    step = read_metrics(tmp_path / "metrics.csv")[0]
    assert int(step["tokens_cf"]) == n_cf and int(step["tokens_orig"]) == n_orig
    assert float(step["loss"]) == pytest.approx(
        (s_orig + 0.5 * s_cf) / (n_orig + 0.5 * n_cf), rel=1e-4
    )
