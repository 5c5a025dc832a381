"""Per-layer attention shares of response tokens on confounder / other / planted tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leafpipe.attention import AttentionSample, attention_shares
from leafpipe.templates import INSTRUCTION, RESPONSE, encode_sample

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
    confounder = instruction & np.array([
        any(s < hi and e > lo for lo, hi in sample.confounder_spans) for s, e in enc.offsets
    ])
    queries = np.flatnonzero([f == RESPONSE for f in enc.fields])
    return enc, confounder, instruction & ~confounder, queries


def test_padding_does_not_change_a_sample(tiny_llama, tokenizer, attention_samples):
    short, other = attention_samples
    long = AttentionSample(other.instruction + " Then count them twice.", other.response,
                           other.confounder_spans)
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
    enc, confounder, other, queries = _masks(tokenizer, sample)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(torch.tensor([enc.input_ids]), output_attentions=True)
    for layer, weights in enumerate(out.attentions):
        heads = weights[0].double().mean(0).numpy()[queries]
        for name, mask in (("confounder", confounder), ("other", other)):
            expected = heads[:, mask].sum(-1).mean()
            assert frame.loc[layer, f"share_{name}"] == pytest.approx(expected, rel=1e-6)
            assert frame.loc[layer, f"per_token_{name}"] == pytest.approx(
                expected / mask.sum(), rel=1e-6)
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
    unplanted = [AttentionSample(s.instruction, s.response, s.confounder_spans)
                 for s in attention_samples]
    without = attention_shares(model, tokenizer, unplanted)
    assert not [c for c in without.columns if "planted" in c]
    # One sample known to have no planted tokens, one unknown: the mean is over the known one.
    mixed = [AttentionSample(unplanted[0].instruction, unplanted[0].response,
                             unplanted[0].confounder_spans, planted_spans=()), unplanted[1]]
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
    np.testing.assert_allclose(mixed["per_token_confounder"], full["per_token_confounder"],
                               rtol=1e-9)
    bare_alone = attention_shares(model, tokenizer, bare[1:])
    np.testing.assert_allclose(
        mixed["share_other"], (full["share_other"] + bare_alone["share_other"]) / 2, rtol=1e-9)
