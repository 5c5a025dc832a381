import json
import logging
import math
import sys

import pytest
import torch
from distill_groups import (
    DISTRACTORS,
    TWO_ITEM_STEPS,
    counterfactual_row,
    many_groups,
    mixed_groups,
    original_row,
    read_metrics,
    same,
    weights,
)
from transformers import AutoModelForCausalLM

from leafpipe.config import ConfigError, validate_config
from leafpipe.distill.checkpoints import METRIC_COLUMNS, save_distilled
from leafpipe.distill.data import (
    MODES,
    DistillGroup,
    Text,
    load_groups,
    validation_split,
)
from leafpipe.distill.objective import lr_at
from leafpipe.distill.parts import allow_tf32, check_tokenizers
from leafpipe.distill.reference_loss import token_kl
from leafpipe.distill.spec import OBJECTIVES, DistillSpec, KDSpec, LoraSpec
from leafpipe.distill.trainer import distill
from leafpipe.text.batching import collate, pack
from leafpipe.text.templates import encode_sample
from leafpipe.text.tokenizer import train_tokenizer

FAST = dict(
    epochs=4, global_batch=2, micro_batch=2, lr=3e-3, warmup_ratio=0.25, seed=0, log_every=1
)


def counterfactual_rows(samples) -> list[dict]:
    """Originals plus one counterfactual each: the planted distractor sentence deleted."""
    rows = []
    for k, ((instruction, response), distractor) in enumerate(zip(samples, DISTRACTORS)):
        start = instruction.index(distractor)
        removed = dict(
            field="instruction", start=start, end=start + len(distractor), text=distractor
        )
        pruned = instruction.replace(distractor, "")
        rows += [
            original_row(f"s{k}", instruction, response),
            counterfactual_row(f"s{k}", 0, pruned, response, [removed]),
        ]
    return rows


def mean_kl(teacher, student, tokenizer, pairs) -> float:
    batch = collate([encode_sample(tokenizer, *p) for p in pairs], tokenizer.pad_token_id)
    with torch.no_grad():
        t, s = (
            m(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
            for m in (teacher, student)
        )
    return token_kl(t, s, batch.target_mask).mean().item()


@pytest.fixture(params=MODES)
def mode(request) -> str:
    """Each counterfactual scheme: both must keep what these tests pin down."""
    return request.param


# --- grouping and splitting -------------------------------------------------------------------


def test_load_groups_pairs_originals_with_their_counterfactuals(samples):
    rows = counterfactual_rows(samples)
    rows.append(original_row("s2", "Q?", "A."))
    groups = load_groups(rows[::-1])  # counterfactuals before their originals is fine
    assert [g.original for g in groups] == [("Q?", "A."), samples[1], samples[0]]
    assert [g.source_id for g in groups] == ["s2", "s1", "s0"]
    assert groups[0].counterfactuals == []
    assert groups[2].counterfactuals == [Text(rows[1]["instruction"], samples[0][1], 0)]
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


def test_validation_split_depends_on_source_ids_not_order():
    groups = [DistillGroup((f"q{k}", "a"), source_id=f"id{k}") for k in range(400)]
    train, val = validation_split(groups, 0.2)
    assert sorted(train + val) == list(range(400))
    assert 50 < len(val) < 110  # about 20%
    held = {groups[i].source_id for i in val}
    shuffled = groups[::-1]
    assert {shuffled[i].source_id for i in validation_split(shuffled, 0.2)[1]} == held
    subset = groups[:100]  # a smaller corpus keeps each old group on its side
    assert {subset[i].source_id for i in validation_split(subset, 0.2)[1]} == held & {
        g.source_id for g in subset
    }
    assert validation_split(groups, 0.0)[1] == []


# --- settings ---------------------------------------------------------------------------------


def test_global_batch_must_be_a_multiple_of_micro_batch():
    with pytest.raises(
        ValueError, match=r"global_batch \(6\) must be a multiple of distill.micro_batch \(4\)"
    ):
        DistillSpec(global_batch=6, micro_batch=4)
    models = {"teacher": {}, "student": {}}
    with pytest.raises(ConfigError, match="global_batch"):
        validate_config({"models": models, "distill": {"global_batch": 6, "micro_batch": 4}})
    with pytest.raises(ConfigError, match="val_fraction"):
        validate_config({"models": models, "distill": {"keep": "best", "val_fraction": 0}})


def test_spec_from_config_reads_nested_settings():
    config = validate_config(
        {
            "models": {"teacher": {}, "student": {}},
            "distill": {"kd": {"kind": "jsd", "beta": 0.3}, "micro_batch": 8},
        }
    )
    spec = DistillSpec.from_config(config["distill"], objective="kd", seed=7)
    assert spec.kd == KDSpec(kind="jsd", temperature=1.0, beta=0.3, chunk_tokens=512)
    assert (spec.seed, spec.global_batch, spec.micro_batch, spec.accumulation) == (7, 16, 8, 2)
    assert spec.lora is None and spec.keep == "last"


def test_head_precision_and_collective_timeout_come_from_the_config():
    models = {"teacher": {}, "student": {}}
    config = validate_config(
        {
            "models": models,
            "distill": {"kd": {"head_precision": "bf16"}, "collective_timeout_min": 7},
        }
    )
    spec = DistillSpec.from_config(config["distill"], objective="kd", seed=0)
    assert (spec.kd.head_precision, spec.collective_timeout_min) == ("bf16", 7)
    default = DistillSpec.from_config(
        validate_config({"models": models})["distill"], objective="kd", seed=0
    )
    assert (default.kd.head_precision, default.collective_timeout_min) == ("auto", 120)
    with pytest.raises(ValueError, match="collective_timeout_min"):
        DistillSpec(collective_timeout_min=0)


def test_the_distill_section_keeps_the_workflows_keys_and_refuses_unknown_ones():
    section = {"variants": ["kd"], "gpus": 2, "teacher_topk": None, "lam": 0.5}
    assert DistillSpec.from_config(section, objective="kd", seed=0).lam == 0.5
    with pytest.raises(
        TypeError, match=r"DistillSpec has no field for the config key\(s\) \['lamda'\]"
    ):
        DistillSpec.from_config({**section, "lamda": 0.5}, objective="kd", seed=0)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_the_trainer_applies_head_precision_to_either_loss(
    tokenizer, samples, tiny_llama, objective
):
    """sft's cross-entropy and kd's divergence both take the switch: bf16 products change the
    first step's loss (by their rounding), and auto on the CPU is fp32 to the bit."""
    groups = many_groups(samples, 4)
    first = {}
    for precision in ("fp32", "bf16", "auto"):
        losses = []
        spec = DistillSpec(
            objective=objective, kd=KDSpec(head_precision=precision), **{**FAST, "epochs": 1}
        )
        distill(
            tiny_llama(0) if objective == "kd" else None,
            tiny_llama(1),
            tokenizer,
            groups,
            spec,
            1,
            on_step=lambda step, row: losses.append(row["loss"]),
        )
        first[precision] = losses[0]
    assert first["bf16"] != first["fp32"] and first["auto"] == first["fp32"]


def test_fp32_products_use_tf32_on_cuda_only():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    try:
        allow_tf32(torch.device("cpu"))
        assert matmul.fp32_precision == before
        allow_tf32(torch.device("cuda"))
        assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision = before


def test_lr_warms_up_then_follows_the_schedule():
    spec = DistillSpec(lr=1.0, warmup_ratio=0.1)
    lrs = [lr_at(step, 100, spec) for step in range(100)]
    # Warm-up steps 0..9 climb to (step + 1) / 11 of the peak, which step 10 reaches.
    assert all(math.isclose(lr, (step + 1) / 11) for step, lr in enumerate(lrs[:10]))
    assert lrs[10] == 1.0 and max(lrs) == 1.0
    assert lrs[10:] == sorted(lrs[10:], reverse=True)
    assert 0 < lrs[-1] < 1e-3
    assert math.isclose(lrs[55], 0.5)  # halfway through the 90 decay steps
    linear = DistillSpec(lr=1.0, warmup_ratio=0.1, schedule="linear")
    assert math.isclose(lr_at(55, 100, linear), 0.5) and math.isclose(
        lr_at(99, 100, linear), 1 / 90
    )
    constant = DistillSpec(lr=1.0, warmup_ratio=0.1, schedule="constant")
    assert lr_at(5, 100, constant) < 1.0 and {lr_at(s, 100, constant) for s in range(10, 100)} == {
        1.0
    }
    # The first step after warm-up takes the configured rate exactly, whatever the schedule.
    for lr in (1e-5, 3e-5, 1e-4):
        for schedule in ("cosine", "linear", "constant"):
            spec = DistillSpec(lr=lr, warmup_ratio=0.03, schedule=schedule)
            assert [lr_at(round(0.03 * n), n, spec) for n in (50, 100, 300)] == [lr] * 3


# --- training ---------------------------------------------------------------------------------


def test_distillation_reduces_kl_on_training_samples(tokenizer, samples, tiny_llama, caplog, mode):
    teacher, student = tiny_llama(0), tiny_llama(1)
    groups = load_groups(counterfactual_rows(samples))
    cf_pairs = [g.counterfactuals[0] for g in groups]
    before = [mean_kl(teacher, student, tokenizer, pairs) for pairs in (samples, cf_pairs)]
    teacher_weights = weights(teacher)
    with caplog.at_level(logging.INFO, logger="leafpipe.distill.trainer"):
        # One step per epoch: 2 groups, or their 2 originals and 2 counterfactuals with all.
        batch = 4 if mode == "all" else 2
        spec = DistillSpec(
            lam=1.0, counterfactuals=mode, **{**FAST, "global_batch": batch, "micro_batch": batch}
        )
        distill(teacher, student, tokenizer, groups, spec, threads=1)
    after = [mean_kl(teacher, student, tokenizer, pairs) for pairs in (samples, cf_pairs)]
    assert after[0] < 0.7 * before[0]
    assert after[1] < 0.7 * before[1]
    assert same(weights(teacher), teacher_weights)  # the teacher is frozen
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not student.training and not teacher.training
    steps = [r for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(steps) == FAST["epochs"]  # log_every=1, one step per epoch
    assert "loss_orig" in caplog.text and "loss_cf" in caplog.text and "nan" not in caplog.text


def test_step_loss_is_the_token_mean_over_the_whole_step(
    tokenizer, samples, tiny_llama, tmp_path, mode
):
    """Tokens are counted over the whole step, across micro-batches: all, one weighted token
    mean (S_orig + λ S_cf) / (N_orig + λ N_cf); draw_one, a mean per term."""
    groups = many_groups(samples, 4)
    teacher, student = tiny_llama(0), tiny_llama(1)
    expected = {}
    for term, pairs in (
        ("orig", [g.original for g in groups]),
        ("cf", [cf for g in groups for cf in g.counterfactuals]),
    ):
        batch = collate([encode_sample(tokenizer, *p) for p in pairs], tokenizer.pad_token_id)
        with torch.no_grad():
            t, s = (
                m(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
                for m in (teacher, student)
            )
        n = batch.target_mask.sum(-1)
        expected[term] = ((token_kl(t, s, batch.target_mask) * n).sum() / n.sum()).item()
        expected[f"{term}_tokens"] = int(n.sum())
    # One step holds every sample: 4 groups and their 2 counterfactuals (6 items with all).
    spec = DistillSpec(
        lam=0.5,
        epochs=1,
        global_batch=4 if mode == "draw_one" else 6,
        micro_batch=1,
        lr=1e-3,
        counterfactuals=mode,
    )
    distill(teacher, student, tokenizer, groups, spec, 1, work_dir=tmp_path)
    (step, epoch) = read_metrics(tmp_path / "metrics.csv")
    # KLs of similar distributions are small differences of large numbers: 1e-4 relative.
    assert float(step["loss_orig"]) == pytest.approx(expected["orig"], rel=1e-4)
    assert float(step["loss_cf"]) == pytest.approx(expected["cf"], rel=1e-4)
    if mode == "all":
        n_orig, n_cf = expected["orig_tokens"], expected["cf_tokens"]
        total = (expected["orig"] * n_orig + 0.5 * expected["cf"] * n_cf) / (n_orig + 0.5 * n_cf)
    else:
        total = expected["orig"] + 0.5 * expected["cf"]
    assert float(step["loss"]) == pytest.approx(total, rel=1e-4)
    assert int(step["tokens_orig"]) == expected["orig_tokens"]
    assert int(step["tokens_cf"]) == expected["cf_tokens"]
    assert epoch["kind"] == "epoch" and epoch["loss"] == step["loss"]


def test_micro_batch_size_does_not_change_training(tokenizer, samples, tiny_llama, mode):
    """Gradient accumulation: micro-batches of 1, 2 or 4 make the same steps as one batch of 4."""
    groups = many_groups(samples, 8)
    results = []
    for micro in (4, 2, 1):
        spec = DistillSpec(
            lam=0.7, epochs=2, global_batch=4, micro_batch=micro, lr=3e-3, counterfactuals=mode
        )
        results.append(weights(distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, spec, 1)))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=0, atol=2e-6)
    assert not same(results[0], weights(tiny_llama(1)))


def test_counterfactual_term_changes_training(tokenizer, samples, tiny_llama):
    groups = load_groups(counterfactual_rows(samples))
    kd = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, DistillSpec(lam=0.0, **FAST), 1)
    leaf = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, DistillSpec(lam=1.0, **FAST), 1)
    assert not same(weights(kd), weights(leaf))


def test_kd_baseline_is_lambda_zero_or_no_counterfactuals(tokenizer, samples, tiny_llama, mode):
    groups = many_groups(samples, 8)
    stripped = [DistillGroup(g.original, source_id=g.source_id) for g in groups]
    spec = dict(FAST, epochs=2, global_batch=4, micro_batch=2, counterfactuals=mode)
    a = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, DistillSpec(lam=0.0, **spec), 1)
    b = distill(tiny_llama(0), tiny_llama(1), tokenizer, stripped, DistillSpec(lam=1.0, **spec), 1)
    assert same(weights(a), weights(b))


def test_deterministic_for_a_seed(tokenizer, samples, tiny_llama, mode):
    groups = many_groups(samples, 6)
    spec = DistillSpec(lam=1.0, counterfactuals=mode, **{**FAST, "epochs": 2, "micro_batch": 1})
    a = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, spec, 1)
    b = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, spec, 1)
    other_seed = DistillSpec(
        lam=1.0, counterfactuals=mode, **{**FAST, "epochs": 2, "micro_batch": 1, "seed": 1}
    )
    c = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, other_seed, 1)
    assert same(weights(a), weights(b))
    assert not same(weights(a), weights(c))  # the seed changes the batch order


def test_sft_learns_the_responses_without_a_teacher(tokenizer, samples, tiny_llama):
    from leafpipe.text.batching import response_cross_entropy

    groups = load_groups(counterfactual_rows(samples))
    batch = collate([encode_sample(tokenizer, *s) for s in samples], tokenizer.pad_token_id)

    def ce(model) -> float:
        with torch.no_grad():
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return response_cross_entropy(logits, batch).mean().item()

    student = tiny_llama(1)
    before = ce(student)
    distill(
        None,
        student,
        tokenizer,
        groups,
        DistillSpec(objective="ce", lam=0.0, **{**FAST, "lr": 1e-2, "epochs": 8}),
        1,
    )
    assert ce(student) < 0.8 * before
    with pytest.raises(ValueError, match="needs a teacher"):
        distill(None, tiny_llama(1), tokenizer, groups, DistillSpec(**FAST), 1)


@pytest.mark.parametrize("kind", ["reverse_kl", "jsd"])
def test_other_divergences_train_too(tokenizer, samples, tiny_llama, kind):
    teacher, student = tiny_llama(0), tiny_llama(1)
    groups = load_groups(counterfactual_rows(samples))
    before = mean_kl(teacher, student, tokenizer, samples)
    spec = DistillSpec(kd=KDSpec(kind=kind, temperature=2.0), **FAST)
    distill(teacher, student, tokenizer, groups, spec, 1)
    assert mean_kl(teacher, student, tokenizer, samples) < 0.8 * before


def test_gradient_checkpointing_gives_the_same_weights(tokenizer, samples, tiny_llama):
    groups = many_groups(samples, 4)
    plain = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, DistillSpec(**FAST), 1)
    student = tiny_llama(1)
    spec = DistillSpec(gradient_checkpointing=True, **FAST)
    checkpointed = distill(tiny_llama(0), student, tokenizer, groups, spec, 1)
    # what transformers' is_activation_checkpointing (5.24) and is_gradient_checkpointing (5.16)
    # both read
    assert any(getattr(m, "gradient_checkpointing", False) for m in student.modules())
    for a, b in zip(weights(plain), weights(checkpointed)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# --- validation, checkpoints, metrics, output ---------------------------------------------------


def test_metrics_and_checkpoints_are_written(tokenizer, samples, tiny_llama, tmp_path, mode):
    groups = many_groups(samples, 8)
    spec = DistillSpec(**TWO_ITEM_STEPS, epochs=2, val_fraction=0.5, counterfactuals=mode)
    student = distill(tiny_llama(0), tiny_llama(1), tokenizer, groups, spec, 1, work_dir=tmp_path)
    training = json.loads((tmp_path / "training.json").read_text())
    n_val = training["groups_validation"]
    assert 0 < n_val < 8 and training["groups_train"] == 8 - n_val
    # all: every training group's original and counterfactual is a sample; draw_one: a group is one
    n_items = 8 - n_val + (training["groups_with_counterfactuals"] if mode == "all" else 0)
    steps_per_epoch = math.ceil(n_items / 2)
    rows = read_metrics(tmp_path / "metrics.csv")
    assert list(rows[0]) == list(METRIC_COLUMNS)
    assert [r["kind"] for r in rows] == (["step"] * steps_per_epoch + ["epoch"]) * 2
    assert [int(r["step"]) for r in rows if r["kind"] == "step"] == list(
        range(1, 2 * steps_per_epoch + 1)
    )
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert all(float(r["val_loss"]) > 0 and int(r["val_tokens"]) > 0 for r in epochs)
    assert all(
        r["val_loss"] == "" and float(r["grad_norm"]) > 0 for r in rows if r["kind"] == "step"
    )
    assert (tmp_path / "last" / "config.json").is_file() and (
        tmp_path / "best" / "config.json"
    ).is_file()
    assert (tmp_path / "state.pt").is_file()
    assert training["kept"] == "last" and training["steps"] == 2 * steps_per_epoch

    out = tmp_path.parent / (tmp_path.name + "-out")
    save_distilled(student, tokenizer, tmp_path, out, info={"variant": "leaf_instr"})
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.csv",
        "training.json",
    } <= {p.name for p in out.iterdir()}
    assert json.loads((out / "training.json").read_text())["variant"] == "leaf_instr"
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert same(weights(reloaded), weights(student))
    # The resumable state is gone, so a rerun trains afresh; best/ stays only if it differs.
    assert not (tmp_path / "state.pt").exists() and not (tmp_path / "last").exists()
    assert (tmp_path / "best").exists() == (training["best_epoch"] != 2)


def test_keep_best_returns_the_epoch_with_the_lowest_validation_loss(
    tokenizer, samples, tiny_llama, tmp_path, mode
):
    groups = many_groups(samples, 8)
    spec = DistillSpec(
        lam=1.0,
        epochs=2,
        global_batch=2,
        micro_batch=2,
        lr=3e-3,
        warmup_ratio=0.0,
        schedule="constant",
        val_fraction=0.5,
        keep="best",
        counterfactuals=mode,
    )
    student = tiny_llama(1)

    def spoil_the_last_step(step, row):  # the second epoch ends far from the teacher
        if step == {"all": 8, "draw_one": 6}[mode]:
            with torch.no_grad():
                for p in student.parameters():
                    p.add_(torch.randn_like(p))

    distill(
        tiny_llama(0),
        student,
        tokenizer,
        groups,
        spec,
        1,
        work_dir=tmp_path,
        on_step=spoil_the_last_step,
    )
    training = json.loads((tmp_path / "training.json").read_text())
    val = [
        float(r["val_loss"]) for r in read_metrics(tmp_path / "metrics.csv") if r["kind"] == "epoch"
    ]
    assert val[1] > 2 * val[0] and training["steps"] == {"all": 8, "draw_one": 6}[mode]
    assert (
        training["best_epoch"] == 1 and training["kept"] == "best" and training["kept_epoch"] == 1
    )
    # Batches depend on (seed, epoch) only and the rate is constant: the same run stopped after
    # the first epoch has exactly the kept weights.
    short = distill(
        tiny_llama(0),
        tiny_llama(1),
        tokenizer,
        groups,
        DistillSpec(**{**spec.__dict__, "epochs": 1}),
        1,
    )
    assert same(weights(student), weights(short))


# --- models and tokenizers ----------------------------------------------------------------------


def test_tokenizer_pairs(tokenizer, samples, tiny_llama):
    groups = load_groups(counterfactual_rows(samples))
    other = train_tokenizer(["entirely different words and sentences"] * 30, vocab_size=280)
    with pytest.raises(
        ValueError,
        match="tokenizers differ.*the same tokenizer, or a teacher whose vocabulary extends",
    ):
        distill(
            tiny_llama(0),
            tiny_llama(1),
            tokenizer,
            groups,
            DistillSpec(**FAST),
            teacher_tokenizer=other,
        )
    # Same family: the teacher's tokenizer adds tokens after the student's, and its output layer
    # is larger (padded); the teacher's extra rows are ignored.
    extended = train_tokenizer([t for pair in samples for t in pair] * 20, vocab_size=300)
    extended.add_tokens(["<tool>", "</tool>"])
    check_tokenizers(tokenizer, extended)
    teacher, student = tiny_llama(0, vocab_size=len(extended) + 6), tiny_llama(1)
    batch = collate([encode_sample(tokenizer, *p) for p in samples], tokenizer.pad_token_id)

    def kl() -> float:  # over the student's vocabulary: the teacher's extra rows are cut off
        with torch.no_grad():
            t, s = (
                m(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
                for m in (teacher, student)
            )
        return token_kl(t[..., : len(tokenizer)], s, batch.target_mask).mean().item()

    before = kl()
    distill(teacher, student, tokenizer, groups, DistillSpec(**FAST), 1, teacher_tokenizer=extended)
    assert kl() < 0.7 * before


def test_output_layers_smaller_than_the_vocabulary_are_clear_errors(tokenizer, samples, tiny_llama):
    groups = load_groups(counterfactual_rows(samples))
    small = len(tokenizer) - 8
    with pytest.raises(ValueError, match="tokenizer has .* student model's output layer"):
        distill(
            tiny_llama(0), tiny_llama(1, vocab_size=small), tokenizer, groups, DistillSpec(**FAST)
        )
    with pytest.raises(ValueError, match="teacher's output layer .* smaller than the student's"):
        distill(
            tiny_llama(0),
            tiny_llama(1, vocab_size=len(tokenizer) + 8),
            tokenizer,
            groups,
            DistillSpec(**FAST),
        )


def test_lora_without_peft_is_a_clear_error(tokenizer, samples, tiny_llama, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    groups = load_groups(counterfactual_rows(samples))
    with pytest.raises(ImportError, match=r"peft is not installed.*leafpipe\[lora\]"):
        distill(
            tiny_llama(0), tiny_llama(1), tokenizer, groups, DistillSpec(lora=LoraSpec(), **FAST)
        )
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match="peft is not installed"):
        validate_config({"models": {"teacher": {}, "student": {}}, "distill": {"lora": {"r": 4}}})


def test_lora_trains_adapters_and_returns_a_merged_model(tokenizer, samples, tiny_llama, tmp_path):
    teacher, student = tiny_llama(0), tiny_llama(1)
    original = {n: p.detach().clone() for n, p in student.named_parameters()}
    groups = load_groups(counterfactual_rows(samples))
    before = mean_kl(teacher, student, tokenizer, samples)
    spec = DistillSpec(
        lora=LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj")),
        **{**FAST, "lr": 1e-2},
    )
    merged = distill(teacher, student, tokenizer, groups, spec, 1, work_dir=tmp_path)
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not any("lora" in n for n, _ in merged.named_parameters())
    changed = {n for n, p in merged.named_parameters() if not torch.equal(p, original[n])}
    assert changed and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in changed)
    assert mean_kl(teacher, merged, tokenizer, samples) < before
    assert (tmp_path / "last" / "adapter_config.json").is_file()  # checkpoints hold the adapter


@pytest.mark.parametrize("objective, mode", [("kd", "all"), ("ce", "all"), ("kd", "draw_one")])
def test_packing_gives_the_same_training(
    tokenizer, samples, tiny_llama, objective, mode, monkeypatch
):
    """Packed micro-batches hold the same samples with the same losses: the same weights."""
    import leafpipe.distill.steps as steps

    groups = mixed_groups(samples)
    rows_and_samples = []

    def spy(encoded, pad_id):
        batch, order = pack(encoded, pad_id)
        rows_and_samples.append((batch.input_ids.shape[0], len(encoded)))
        return batch, order

    monkeypatch.setattr(steps, "pack", spy)
    spec = dict(
        FAST, epochs=2, global_batch=8, micro_batch=8, objective=objective, counterfactuals=mode
    )
    plain = distill(
        tiny_llama(0), tiny_llama(1), tokenizer, groups, DistillSpec(lam=1.0, **spec), 1
    )
    packed = distill(
        tiny_llama(0),
        tiny_llama(1),
        tokenizer,
        groups,
        DistillSpec(lam=1.0, packing=True, **spec),
        1,
    )
    assert any(rows < n for rows, n in rows_and_samples)  # samples did share rows
    for a, b in zip(weights(plain), weights(packed)):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-6)
    assert not same(weights(plain), weights(tiny_llama(1)))
