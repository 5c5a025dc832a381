import logging
import math

import pytest
import torch

from leafpipe.batching import collate
from leafpipe.distill import DistillGroup, DistillSpec, distill, load_groups, lr_at
from leafpipe.losses import token_kl
from leafpipe.templates import encode_sample

DISTRACTORS = ["Mia owns 9 red cars. ", "The sky was blue on day 8. "]

FAST = dict(epochs=4, batch_size=2, lr=3e-3, warmup_ratio=0.25, seed=0, log_every=1)


def counterfactual_rows(samples) -> list[dict]:
    """Originals plus one counterfactual each: the planted distractor sentence deleted."""
    rows = []
    for k, ((instruction, response), distractor) in enumerate(zip(samples, DISTRACTORS)):
        start = instruction.index(distractor)
        rows.append(
            dict(id=f"s{k}", source_id=f"s{k}", kind="original", instruction=instruction,
                 response=response, removed=[])
        )
        rows.append(
            dict(id=f"s{k}#cf0", source_id=f"s{k}", kind="counterfactual",
                 instruction=instruction.replace(distractor, ""), response=response,
                 removed=[dict(field="instruction", start=start,
                               end=start + len(distractor), text=distractor)])
        )
    return rows


def mean_kl(teacher, student, tokenizer, pairs) -> float:
    batch = collate([encode_sample(tokenizer, *p) for p in pairs], tokenizer.pad_token_id)
    with torch.no_grad():
        t, s = (m(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
                for m in (teacher, student))
    return token_kl(t, s, batch.target_mask).mean().item()


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


# --- grouping ---------------------------------------------------------------------------------


def test_load_groups_pairs_originals_with_their_counterfactuals(samples):
    rows = counterfactual_rows(samples)
    rows.append(dict(id="s2", source_id="s2", kind="original", instruction="Q?", response="A.",
                     removed=[]))
    groups = load_groups(rows[::-1])  # counterfactuals before their originals is fine
    assert [g.original for g in groups] == [("Q?", "A."), samples[1], samples[0]]
    assert groups[0].counterfactuals == []
    assert groups[2].counterfactuals == [(rows[1]["instruction"], samples[0][1])]
    assert DISTRACTORS[0] not in groups[2].counterfactuals[0][0]


def test_orphan_counterfactual_is_a_clear_error(samples):
    rows = [r for r in counterfactual_rows(samples) if r["id"] != "s1"]
    with pytest.raises(ValueError, match=r"'s1#cf0'.*'s1' has no original"):
        load_groups(rows)


def test_duplicate_original_and_unknown_kind_are_errors(samples):
    rows = counterfactual_rows(samples)
    with pytest.raises(ValueError, match="two original rows"):
        load_groups(rows + [rows[0]])
    with pytest.raises(ValueError, match="'s0#cf0'.*got 'pruned'"):
        load_groups([rows[0], {**rows[1], "kind": "pruned"}])


# --- training ---------------------------------------------------------------------------------


def test_distillation_reduces_kl_on_training_samples(tokenizer, samples, tiny_llama, caplog):
    teacher, student = tiny_llama(0), tiny_llama(1)
    groups = load_groups(counterfactual_rows(samples))
    cf_pairs = [g.counterfactuals[0] for g in groups]
    before = [mean_kl(teacher, student, tokenizer, pairs) for pairs in (samples, cf_pairs)]
    teacher_weights = weights(teacher)
    with caplog.at_level(logging.INFO, logger="leafpipe.distill"):
        distill(teacher, student, tokenizer, groups, DistillSpec(lam=1.0, **FAST), threads=1)
    after = [mean_kl(teacher, student, tokenizer, pairs) for pairs in (samples, cf_pairs)]
    assert after[0] < 0.7 * before[0]
    assert after[1] < 0.7 * before[1]
    assert same(weights(teacher), teacher_weights)  # the teacher is frozen
    assert not student.training and not teacher.training
    assert len(caplog.records) == FAST["epochs"]  # log_every=1, one step per epoch
    assert "kl_orig" in caplog.text and "kl_cf" in caplog.text and "nan" not in caplog.text


def test_counterfactual_term_changes_training(tokenizer, samples, tiny_llama):
    groups = load_groups(counterfactual_rows(samples))
    kd = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, DistillSpec(lam=0.0, **FAST), 1)
    leaf = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, DistillSpec(lam=1.0, **FAST), 1)
    assert not same(weights(kd), weights(leaf))


def test_kd_baseline_is_lambda_zero_or_no_counterfactuals(tokenizer, samples, tiny_llama):
    groups = load_groups(counterfactual_rows(samples))
    stripped = [DistillGroup(g.original) for g in groups]
    a = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, DistillSpec(lam=0.0, **FAST), 1)
    b = distill(tiny_llama(0), tiny_llama(1), tokenizer, stripped, DistillSpec(lam=1.0, **FAST), 1)
    assert same(weights(a), weights(b))


def test_deterministic_for_a_seed(tokenizer, samples, tiny_llama):
    groups = load_groups(counterfactual_rows(samples))
    spec = DistillSpec(lam=1.0, **{**FAST, "batch_size": 1})
    a = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, spec, 1)
    b = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, spec, 1)
    other_seed = DistillSpec(lam=1.0, **{**FAST, "batch_size": 1, "seed": 1})
    c = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, other_seed, 1)
    assert same(weights(a), weights(b))
    assert not same(weights(a), weights(c))  # the seed changes the batch order


def test_vocab_mismatch_is_a_clear_error(tokenizer, samples, tiny_llama):
    teacher, student = tiny_llama(0, vocab_size=len(tokenizer) + 8), tiny_llama(1)
    groups = load_groups(counterfactual_rows(samples))
    with pytest.raises(ValueError, match="share a tokenizer"):
        distill(teacher, student, tokenizer, groups, DistillSpec(**FAST))
    small = len(tokenizer) - 8
    with pytest.raises(ValueError, match="tokenizer has"):
        distill(tiny_llama(0, vocab_size=small), tiny_llama(1, vocab_size=small), tokenizer,
                groups, DistillSpec(**FAST))


def test_lr_warms_up_then_decays_to_zero():
    spec = DistillSpec(lr=1.0, warmup_ratio=0.1)
    lrs = [lr_at(step, 100, spec) for step in range(100)]
    assert lrs[:10] == sorted(lrs[:10]) and lrs[0] < 0.2
    assert lrs[10] == 1.0 and max(lrs) == 1.0
    assert lrs[10:] == sorted(lrs[10:], reverse=True)
    assert 0 < lrs[-1] < 1e-3
    assert math.isclose(lrs[55], 0.5)  # halfway through the 90 decay steps
