"""Per-layer attention shares of response tokens on confounder / other / planted tokens and on
each kind of instruction token, and the report's attention section."""

from __future__ import annotations

import weakref

import numpy as np
import pandas as pd
import pytest
import torch

from leafpipe.evaluation.attention import (
    AttentionSample,
    analysis_token_budget,
    attention_shares,
    layer_masses,
)
from leafpipe.execution.memory import BUDGET_MARGIN, attention_analysis_bytes
from leafpipe.execution.model_shapes import hub_shape
from leafpipe.report.attention import attention_plot, attention_section
from leafpipe.text.templates import INSTRUCTION, RESPONSE, encode_sample

CONFOUNDERS = ("Mia owns 9 red cars.", "The sky was blue on day 8.")


def _span(text: str, part: str) -> tuple[int, int]:
    at = text.index(part)
    return at, at + len(part)


@pytest.fixture
def attention_samples(samples) -> list[AttentionSample]:
    """The fixture's two samples, each with its irrelevant sentence as a planted confounder."""
    out = []
    for (instruction, response), confounder in zip(samples, CONFOUNDERS):
        span = _span(instruction, confounder)
        out.append(AttentionSample(instruction, response, [span], planted_spans=[span]))
    return out


def _masks(tokenizer, sample: AttentionSample):
    enc = encode_sample(tokenizer, sample.instruction, sample.response)
    instruction = np.array([f == INSTRUCTION for f in enc.fields])
    confounder = instruction & np.array(
        [any(s < hi and e > lo for lo, hi in sample.confounder_spans) for s, e in enc.offsets]
    )
    queries = np.flatnonzero([f == RESPONSE for f in enc.fields])
    return enc, confounder, instruction & ~confounder, queries


def _reference_masses(model, enc, masks) -> dict[str, np.ndarray]:
    """The straightforward way, one sample alone: every layer's weights kept (`output_attentions`),
    their float64 mean over heads, each response query's sum over a category's keys, averaged."""
    with torch.no_grad():
        out = model(torch.tensor([enc.input_ids]), output_attentions=True)
    weights = torch.stack(out.attentions)[:, 0].double().mean(1).numpy()  # [L, T, T]
    queries = weights[:, [f == RESPONSE for f in enc.fields]]  # [L, Q, T]
    return {cat: queries[:, :, mask].sum(-1).mean(-1) for cat, mask in masks.items()}


def _assert_layer_columns(frame: pd.DataFrame, model, enc, masks: dict[str, np.ndarray]) -> None:
    """Each layer's `share_{name}` and `per_token_{name}` in `frame` are, for each mask `name` of
    `masks`, the `_reference_masses` of the model's own (eager) attention: whole, and per key."""
    model.set_attn_implementation("eager")
    expected = _reference_masses(model, enc, masks)
    for name, mask in masks.items():
        for layer, mass in enumerate(expected[name]):
            assert frame.loc[layer, f"share_{name}"] == pytest.approx(mass, rel=1e-6)
            assert frame.loc[layer, f"per_token_{name}"] == pytest.approx(
                mass / mask.sum(), rel=1e-6
            )


def test_padding_does_not_change_a_sample(tiny_llama, tokenizer, attention_samples):
    short, other = attention_samples
    long = AttentionSample(
        other.instruction + " Then count them twice.", other.response, other.confounder_spans
    )
    lengths = [len(encode_sample(tokenizer, s.instruction, s.response)) for s in (short, long)]
    assert lengths[0] < lengths[1]  # the short one really is padded in a shared batch
    model = tiny_llama(0)
    alone = attention_shares(model, tokenizer, [short])
    with_long = attention_shares(model, tokenizer, [short, long], batch_size=2)
    long_alone = attention_shares(model, tokenizer, [long])
    cols = ["share_confounder", "share_other", "per_token_confounder", "per_token_other"]
    # Both samples have confounders, so every column is a plain mean of the two samples.
    short_in_batch = 2 * with_long[cols].to_numpy() - long_alone[cols].to_numpy()
    np.testing.assert_allclose(short_in_batch, alone[cols].to_numpy(), atol=1e-5)


def test_shares_are_fractions_of_the_attention(tiny_llama, tokenizer, attention_samples):
    frame = attention_shares(tiny_llama(1), tokenizer, attention_samples)
    shares = frame[["share_confounder", "share_other", "share_planted"]].to_numpy()
    assert ((shares > 0) & (shares < 1)).all()
    total = frame["share_confounder"] + frame["share_other"]
    # Template tokens and the response itself take some of the mass.
    assert (total < 1).all()
    assert list(frame["layer"]) == ["0", "1", "mean"]
    assert (frame["n_samples"] == 2).all()


def test_uniform_attention_matches_hand_computation(tiny_llama, tokenizer, attention_samples):
    """With zero queries every score is 0, so query t spreads 1/(t+1) over keys 0..t."""
    model = tiny_llama(2)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.zero_()
    frame = attention_shares(model, tokenizer, attention_samples, batch_size=2)
    share = {"confounder": [], "other": []}
    per_token = {"confounder": [], "other": []}
    for sample in attention_samples:
        _, confounder, other, queries = _masks(tokenizer, sample)
        inverse = np.mean(1.0 / (queries + 1))  # every instruction token precedes every query
        for name, mask in (("confounder", confounder), ("other", other)):
            share[name].append(mask.sum() * inverse)
            per_token[name].append(inverse)
    for name in ("confounder", "other"):
        np.testing.assert_allclose(frame[f"share_{name}"], np.mean(share[name]), rtol=1e-6)
        np.testing.assert_allclose(frame[f"per_token_{name}"], np.mean(per_token[name]), rtol=1e-6)
    np.testing.assert_allclose(frame["share_planted"], frame["share_confounder"], rtol=1e-12)


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen2"])
def test_matches_the_models_own_attention_weights(family, request, tokenizer, attention_samples):
    model = request.getfixturevalue(family)(3)
    sample = attention_samples[0]
    frame = attention_shares(model, tokenizer, [sample])
    enc, confounder, other, _ = _masks(tokenizer, sample)
    _assert_layer_columns(frame, model, enc, {"confounder": confounder, "other": other})
    means = frame.iloc[:-1].drop(columns="layer").mean()
    assert frame.iloc[-1]["share_confounder"] == pytest.approx(means["share_confounder"])


def test_restores_the_attention_implementation(tiny_qwen2, tokenizer, attention_samples):
    model = tiny_qwen2(0).train()
    before = model.config._attn_implementation
    assert before != "eager"
    attention_shares(model, tokenizer, attention_samples)
    assert model.config._attn_implementation == before
    assert model.training


def test_planted_columns_only_for_samples_with_planted_spans(
    tiny_llama, tokenizer, attention_samples
):
    model = tiny_llama(0)
    unplanted = [
        AttentionSample(s.instruction, s.response, s.confounder_spans) for s in attention_samples
    ]
    without = attention_shares(model, tokenizer, unplanted)
    assert not [c for c in without.columns if "planted" in c]
    # One sample known to have no planted tokens, one unknown: the mean is over the known one.
    mixed = [
        AttentionSample(
            unplanted[0].instruction,
            unplanted[0].response,
            unplanted[0].confounder_spans,
            planted_spans=(),
        ),
        unplanted[1],
    ]
    frame = attention_shares(model, tokenizer, mixed)
    assert (frame["share_planted"] == 0).all()
    assert frame["per_token_planted"].isna().all()


def test_empty_confounder_set_gives_nan_per_token(tiny_llama, tokenizer, attention_samples):
    model = tiny_llama(0)
    bare = [AttentionSample(s.instruction, s.response, ()) for s in attention_samples]
    frame = attention_shares(model, tokenizer, bare)
    assert frame["per_token_confounder"].isna().all()
    assert (frame["share_confounder"] == 0).all()
    assert (frame["n_samples"] == 0).all()
    assert frame["per_token_other"].notna().all()
    # A sample without confounders still counts for the "other" columns.
    full = attention_shares(model, tokenizer, attention_samples[:1])
    mixed = attention_shares(model, tokenizer, [attention_samples[0], bare[1]])
    assert (mixed["n_samples"] == 1).all()
    np.testing.assert_allclose(
        mixed["per_token_confounder"], full["per_token_confounder"], rtol=1e-9
    )
    bare_alone = attention_shares(model, tokenizer, bare[1:])
    np.testing.assert_allclose(
        mixed["share_other"], (full["share_other"] + bare_alone["share_other"]) / 2, rtol=1e-9
    )


def _number_masks(tokenizer, sample: AttentionSample):
    """Instruction tokens holding a digit, inside and outside the planted spans: by hand."""
    enc = encode_sample(tokenizer, sample.instruction, sample.response)
    digit = np.array(
        [
            f == INSTRUCTION and any(c.isdigit() for c in sample.instruction[s:e])
            for f, (s, e) in zip(enc.fields, enc.offsets)
        ]
    )
    planted = np.array(
        [
            f == INSTRUCTION and any(s < hi and e > lo for lo, hi in sample.planted_spans)
            for f, (s, e) in zip(enc.fields, enc.offsets)
        ]
    )
    return digit & planted, digit & ~planted


def test_planted_numbers_and_the_problems_own_numbers_get_their_own_columns(
    tiny_llama, tokenizer, attention_samples
):
    model = tiny_llama(3)
    sample = attention_samples[0]
    frame = attention_shares(model, tokenizer, [sample])
    enc = encode_sample(tokenizer, sample.instruction, sample.response)
    planted_number, own_number = _number_masks(tokenizer, sample)
    assert planted_number.sum() >= 1 and own_number.sum() >= 2  # "9"; "3" and "4"
    masks = {"kind_planted_number": planted_number, "kind_own_number": own_number}
    _assert_layer_columns(frame, model, enc, masks)
    assert frame.loc[0, "per_token_kind_planted_number"] != pytest.approx(
        frame.loc[0, "per_token_kind_own_number"]
    )


def test_the_kinds_split_the_instruction_but_its_whitespace(
    tiny_llama, tokenizer, attention_samples
):
    """Uniform attention (zero queries): query t gives 1/(t+1) to every earlier token, so a set
    of instruction tokens gets its size times the mean of 1/(t+1) over the response queries."""
    model = tiny_llama(2)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.zero_()
    frame = attention_shares(model, tokenizer, attention_samples)
    kinds = ["planted_number", "planted_word", "own_number", "other", "protected"]
    assert not [
        c for c in frame.columns if c.endswith(("kind_number", "kind_word", "kind_punctuation"))
    ]
    whitespace, planted_whitespace = [], []
    for sample in attention_samples:
        enc = encode_sample(tokenizer, sample.instruction, sample.response)
        inverse = np.mean(1.0 / (np.flatnonzero([f == RESPONSE for f in enc.fields]) + 1))
        blank = [
            (s, e)
            for f, (s, e) in zip(enc.fields, enc.offsets)
            if f == INSTRUCTION and not sample.instruction[s:e].strip()
        ]
        whitespace.append(len(blank) * inverse)
        planted_whitespace.append(
            inverse
            * sum(any(s < hi and e > lo for lo, hi in sample.planted_spans) for s, e in blank)
        )
    assert min(whitespace) > 0 and min(planted_whitespace) > 0, (
        "the test tokenizer splits off spaces"
    )
    total = sum(frame[f"share_kind_{k}"] for k in kinds)
    np.testing.assert_allclose(
        total, frame["share_confounder"] + frame["share_other"] - np.mean(whitespace), rtol=1e-6
    )
    planted = frame["share_kind_planted_number"] + frame["share_kind_planted_word"]
    np.testing.assert_allclose(
        planted, frame["share_planted"] - np.mean(planted_whitespace), rtol=1e-6
    )
    assert (frame["share_kind_protected"] == 0).all() and frame[
        "per_token_kind_protected"
    ].isna().all()


def test_without_labels_the_kinds_are_numbers_words_punctuation_and_protected_text(
    tiny_llama, tokenizer, attention_samples
):
    model = tiny_llama(0)
    sample = attention_samples[0]
    question = _span(sample.instruction, "How many apples does Tom have now?")
    bare = AttentionSample(sample.instruction, sample.response, sample.confounder_spans)
    protected = AttentionSample(
        sample.instruction, sample.response, sample.confounder_spans, protected_spans=[question]
    )
    plain, guarded = (
        attention_shares(model, tokenizer, [bare]),
        attention_shares(model, tokenizer, [protected]),
    )
    assert not [c for c in plain.columns if "planted" in c or "own_number" in c]
    assert (plain["share_kind_number"] > 0).all() and (plain["share_kind_punctuation"] > 0).all()
    assert (plain["share_kind_protected"] == 0).all() and (
        guarded["share_kind_protected"] > 0
    ).all()
    # The question's words and "?" move from word and punctuation to protected; numbers stay.
    moved = (
        plain["share_kind_word"]
        + plain["share_kind_punctuation"]
        - guarded["share_kind_word"]
        - guarded["share_kind_punctuation"]
    )
    np.testing.assert_allclose(moved, guarded["share_kind_protected"], rtol=1e-9)
    np.testing.assert_allclose(plain["share_kind_number"], guarded["share_kind_number"], rtol=1e-12)


def _table(models, kinds):
    """attention/{model}.csv tables concatenated, by hand: two layers and their mean."""
    frames = []
    for k, model in enumerate(models):
        per_token = {
            "per_token_confounder": [0.02, 0.04],
            "per_token_other": [0.01, 0.01],
            "share_confounder": [0.1, 0.2],
        }
        per_token.update(
            {f"per_token_kind_{name}": [value * (k + 1)] * 2 for name, value in kinds.items()}
        )
        frame = pd.DataFrame(per_token)
        frame.loc[len(frame)] = frame.mean(axis=0)
        frame.insert(0, "layer", ["0", "1", "mean"])
        frame.insert(0, "model", model)
        frame["n_samples"], frame["samples_from"] = 5, "held out from distillation"
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_report_compares_planted_numbers_with_the_problems_own_per_model(tmp_path):
    table = _table(
        ["student", "leaf_instr"],
        {
            "planted_number": 0.06,
            "own_number": 0.03,
            "other": 0.01,
            "planted_word": 0.02,
            "protected": float("nan"),
        },
    )
    table["per_token_planted"] = 0.05 * (1 + (table["model"] == "leaf_instr"))
    lines = attention_section(table, ["student", "leaf_instr"], {"leaf_instr": "LeaF (instr)"})
    text = "\n".join(lines)
    assert "### By kind of instruction token" in text
    assert (
        "| Model | per planted number token | per own number token | ratio | per planted token "
        "| per other token | ratio |"
    ) in text
    assert "| student | 0.0600 | 0.0300 | 2.0000 | 0.0500 | 0.0100 | 5.0000 |" in text
    assert "| LeaF (instr) | 0.1200 | 0.0600 | 2.0000 | 0.1000 | 0.0200 | 5.0000 |" in text
    attention_plot(table, ["student", "leaf_instr"], {}, tmp_path / "attention.png")
    assert (tmp_path / "attention.png").read_bytes()[:4] == b"\x89PNG"


def test_report_without_labels_shows_attention_per_kind_of_token():
    table = _table(
        ["student"], {"number": 0.04, "word": 0.02, "punctuation": 0.01, "protected": 0.005}
    )
    text = "\n".join(attention_section(table, ["student"], {}))
    assert (
        "| per number token | per word token | per punctuation token | per protected token |"
        in text
    )
    assert "| student | 0.0400 | 0.0200 | 0.0100 | 0.0050 |" in text and "per planted" not in text


def test_report_of_a_table_without_kinds_keeps_its_old_section():
    table = _table(["student"], {})
    text = "\n".join(attention_section(table, ["student"], {}))
    assert "By kind" not in text and "| student | 0.0300 | 0.0100 | 3.0000 |" in text


def test_the_attention_stage_writes_kind_columns_with_protected_text(
    tmp_path, tiny_llama, tokenizer, samples
):
    import json

    from leafpipe import stages
    from leafpipe.config import validate_config

    tiny_llama(0).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    rows = [
        {
            "id": f"s{k}",
            "instruction": instruction,
            "response": response,
            "distractor_spans": [list(_span(instruction, confounder))],
        }
        for k, ((instruction, response), confounder) in enumerate(zip(samples, CONFOUNDERS))
    ]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame({"id": ["s0", "s1"], "spans": ["[]", "[]"]}).to_parquet(
        tmp_path / "tokens.parquet"
    )
    config = validate_config(
        {
            "models": {"teacher": {}, "student": {}},
            "distill": {"val_fraction": 0},
            "detection": {"protect": ["How many"]},
        }
    )
    stages.attention(
        config,
        "student",
        tmp_path / "model",
        tmp_path / "corpus.jsonl",
        tmp_path / "tokens.parquet",
        tmp_path / "student.csv",
    )
    table = pd.read_csv(tmp_path / "student.csv").set_index("layer")
    assert table.loc["mean", "samples_from"] == "corpus"
    assert (
        table.loc["mean", "per_token_kind_planted_number"] > 0
        and table.loc["mean", "share_kind_protected"] > 0
    )
    assert "per_token_confounder" in table.columns and "per_token_kind_number" not in table.columns


def _varied_samples(samples) -> list[AttentionSample]:
    """Five samples of different lengths, so that batches are padded."""
    (q0, r0), (q1, r1) = samples
    texts = [
        (q0, r0),
        (q1, r1),
        (q0 + " " + q1, r0),
        (q1, r1 + "\n" + r0),
        (q0[:40] + "?", r1[:30]),
    ]
    return [AttentionSample(q, r, ()) for q, r in texts]


def test_hooked_reduction_matches_keeping_every_layers_weights(tiny_llama, tokenizer, samples):
    """Arbitrary key masks, a category only some samples have, padded batches of two."""
    model = tiny_llama(4)
    encoded = [
        encode_sample(tokenizer, s.instruction, s.response) for s in _varied_samples(samples)
    ]
    rng = np.random.default_rng(0)
    masks = [
        {"a": rng.random(len(enc)) < 0.3, **({"b": rng.random(len(enc)) < 0.5} if i % 2 else {})}
        for i, enc in enumerate(encoded)
    ]
    calls = []
    model.get_decoder().register_forward_pre_hook(lambda module, args: calls.append(1))
    mass = layer_masses(
        model, encoded, masks, tokenizer.pad_token_id, batch_size=2, max_tokens=None
    )
    assert len(calls) == 3  # five samples, two per batch: the CPU's token budget holds two of any
    model.set_attn_implementation("eager")
    for enc, sample_masks, got in zip(encoded, masks, mass):
        expected = _reference_masses(model, enc, sample_masks)
        assert got.keys() == expected.keys()
        for cat in expected:
            assert got[cat].shape == (2,)
            # fp32 weights of a padded batch differ from those of the sample alone by rounding only
            np.testing.assert_allclose(got[cat], expected[cat], rtol=1e-6)


def test_no_layers_attention_weights_outlive_the_layer(tiny_llama, tokenizer, attention_samples):
    """The weights [B, H, T, T] of a layer are freed before its MLP runs, and none is kept at the
    end."""
    model = tiny_llama(0)
    refs, alive_at_mlp = [], []

    def keep_ref(module, args, output):  # registered first: runs before attention_shares' own hook
        assert output[1].dim() == 4
        refs.append(weakref.ref(output[1]))

    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(keep_ref)
        layer.mlp.register_forward_pre_hook(
            lambda module, args: alive_at_mlp.append(sum(ref() is not None for ref in refs))
        )
    attention_shares(model, tokenizer, attention_samples, batch_size=1)
    assert len(refs) == 2 * 2  # two layers, two batches
    assert alive_at_mlp == [0] * 4
    assert all(ref() is None for ref in refs)


def test_the_token_budget_admits_the_batches_the_planner_counts_as_fitting():
    """Llama-3.2-3B's shape (the shipped table's) at T = 4096 in bf16 on a GPU with 40 GiB free."""
    shape = hub_shape("meta-llama/Llama-3.2-3B-Instruct")
    free, longest = 40 * 2**30, 4096
    batch = analysis_token_budget(shape, free, 2, longest) // longest
    fits = [
        n
        for n in range(1, 64)
        if attention_analysis_bytes(shape, n, longest, 2) <= BUDGET_MARGIN * free
    ]
    assert batch == max(fits) >= 1
    assert (
        analysis_token_budget(shape, free, 2, longest // 2) > batch * longest
    )  # shorter: cheaper per token
