"""How much attention response tokens pay to confounding instruction tokens, per layer.

LeaF's claim is that distilling with counterfactuals (instructions with the confounders pruned)
teaches the student to look away from confounders; this measures it on a model's own attention
weights, for the student before and after distillation alike, so the numbers can be compared.
The mass is also broken down by kind of instruction token (leafpipe.token_kinds): on the world,
LeaF should move attention off the planted numbers, not off the numbers the problem needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.batching import collate
from leafpipe.templates import INSTRUCTION, RESPONSE, EncodedSample, encode_sample
from leafpipe.token_kinds import CORPUS_KINDS, PLANTED_KINDS, token_kinds

KIND = "kind_"  # prefix of the kind categories: kind_planted_number, kind_own_number, ...


@dataclass(frozen=True)
class AttentionSample:
    """One chat sample with character spans (start, end) inside its instruction.

    `planted_spans` is None where nobody knows where distractors are (real data); an empty
    sequence says there are none. `protected_spans`: text the config protects from pruning
    (detection.protect), a kind of its own.
    """

    instruction: str
    response: str
    confounder_spans: Sequence[tuple[int, int]]
    planted_spans: Sequence[tuple[int, int]] | None = None
    protected_spans: Sequence[tuple[int, int]] = ()


def _overlapping(encoded: EncodedSample, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Instruction tokens whose characters overlap any span (template tokens never do)."""
    return np.array([
        field == INSTRUCTION and any(start < hi and end > lo for lo, hi in spans)
        for field, (start, end) in zip(encoded.fields, encoded.offsets)
    ], dtype=bool)


def _kind_masks(sample: AttentionSample, encoded: EncodedSample) -> dict[str, np.ndarray]:
    """{KIND + kind: [n] bool} over the sample's tokens for every kind of its family (planted
    kinds with planted spans, corpus kinds without), empty masks included: a known absence."""
    idx = [i for i, f in enumerate(encoded.fields) if f == INSTRUCTION]
    starts = [encoded.offsets[i][0] for i in idx]
    ends = [encoded.offsets[i][1] for i in idx]
    kinds = np.array(token_kinds([sample.instruction[a:b] for a, b in zip(starts, ends)], starts, ends,
                                 sample.planted_spans, sample.protected_spans), dtype=object)
    family = CORPUS_KINDS if sample.planted_spans is None else PLANTED_KINDS
    masks = {}
    for kind in family:
        mask = np.zeros(len(encoded), dtype=bool)
        mask[np.asarray(idx, dtype=int)[kinds == kind]] = True
        masks[KIND + kind] = mask
    return masks


@contextmanager
def _eager_eval(model: PreTrainedModel) -> Iterator[None]:
    """Eager attention in eval mode for the duration, then the model's own settings back.

    SDPA and FlashAttention never materialise the weights, so only eager attention can return
    them; eval mode keeps attention dropout from perturbing them.
    """
    implementation, training = model.config._attn_implementation, model.training
    model.set_attn_implementation("eager")
    model.eval()
    try:
        yield
    finally:
        model.set_attn_implementation(implementation)
        model.train(training)


def attention_shares(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    samples: Sequence[AttentionSample],
    *,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Attention mass that response tokens put on confounder / other / planted instruction tokens.

    Per sample and layer: the attention weights of each response token (as query) are averaged
    over heads and summed over the keys of a category, giving that query's mass on it; the mass
    is averaged over the sample's response queries. Categories are instruction tokens only:
    "confounder" overlaps a confounder span, "other" is every other instruction token, and
    "planted" (independently of the other two) overlaps a planted span. Template tokens and the
    response itself take the rest of the mass, so confounder + other <= 1. Independently again,
    `kind_<kind>` splits the instruction by leafpipe.token_kinds: with planted spans
    kind_planted_number, kind_planted_word, kind_own_number, kind_other and kind_protected;
    without, kind_number, kind_word, kind_punctuation and kind_protected (whitespace is no kind).

    Across samples, each sample weighing the same:
    - `share_<cat>` is the mean over all samples (a sample without such tokens adds 0, so the
      shares of one row stay comparable and sum to at most 1); `share_planted` and the planted
      kinds' shares are means over the samples whose `planted_spans` is not None, the corpus
      kinds' over those whose `planted_spans` is None;
    - `per_token_<cat>` divides each sample's mass by its number of tokens of the category before
      averaging, over the samples that have at least one (NaN if none has), because confounders
      are a few tokens and a fair comparison with the rest is mass per token;
    - `n_samples` counts samples with at least one confounder token.
    Planted columns (and each family of kinds) appear only if some sample has (or lacks)
    `planted_spans`. Rows are the layers, then the mean over layers; `layer` is a string column
    ("0", "1", ..., "mean") so the frame keeps a single dtype per column and can be written to
    Parquet.

    Batches are right-padded with an attention mask; under the causal mask real queries never
    see padding, so a sample's numbers do not depend on what it is batched with.
    """
    if not samples:
        raise ValueError("no samples to analyse")
    encoded = [encode_sample(tokenizer, s.instruction, s.response) for s in samples]
    # Any id will do: padding sits after every real token, so the causal mask hides it.
    pad = tokenizer.pad_token_id
    pad_id = pad if pad is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    has_planted = any(s.planted_spans is not None for s in samples)

    masks: list[dict[str, np.ndarray]] = []
    for sample, enc in zip(samples, encoded):
        confounder = _overlapping(enc, sample.confounder_spans)
        instruction = np.array([f == INSTRUCTION for f in enc.fields])
        cats = {"confounder": confounder, "other": instruction & ~confounder}
        if sample.planted_spans is not None:
            cats["planted"] = _overlapping(enc, sample.planted_spans)
        masks.append({**cats, **_kind_masks(sample, enc)})

    # mass[i][cat] is the sample's per-layer mass, shape [L].
    mass: list[dict[str, np.ndarray]] = []
    with _eager_eval(model), torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            batch = collate(chunk, pad_id).to(device)
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        output_attentions=True, use_cache=False)
            # [L, B, T, T]: mean over heads, in float64 so sums of many tiny weights stay exact.
            weights = torch.stack([a.double().mean(dim=1) for a in out.attentions]).cpu().numpy()
            for row, enc in enumerate(chunk):
                cats = masks[start + row]
                n = len(enc)
                queries = np.array([f == RESPONSE for f in enc.fields])
                per_query = weights[:, row, :n, :n][:, queries]  # [L, Q, n]
                mass.append({c: per_query[:, :, m].sum(-1).mean(-1) for c, m in cats.items()})

    columns: dict[str, np.ndarray] = {}
    has_corpus = any(s.planted_spans is None for s in samples)
    kinds = [KIND + k for k in dict.fromkeys(
        (PLANTED_KINDS if has_planted else ()) + (CORPUS_KINDS if has_corpus else ()))]
    for cat in ["confounder", "other"] + (["planted"] if has_planted else []) + kinds:
        known = [i for i, m in enumerate(masks) if cat in m]
        columns[f"share_{cat}"] = np.mean([mass[i][cat] for i in known], axis=0)
        present = [i for i in known if masks[i][cat].any()]
        columns[f"per_token_{cat}"] = (
            np.mean([mass[i][cat] / masks[i][cat].sum() for i in present], axis=0) if present
            else np.full_like(columns[f"share_{cat}"], np.nan)
        )
    frame = pd.DataFrame(columns)
    frame.loc[len(frame)] = frame.mean(axis=0)
    frame.insert(0, "layer", [str(i) for i in range(len(frame) - 1)] + ["mean"])
    frame["n_samples"] = sum(bool(m["confounder"].any()) for m in masks)
    return frame
