"""How much attention response tokens pay to confounding instruction tokens, per layer.

LeaF's claim is that distilling with counterfactuals (instructions with the confounders pruned)
teaches the student to look away from confounders; this measures it on a model's own attention
weights, for the student before and after distillation alike, so the numbers can be compared.
The mass is also broken down by kind of instruction token (leafpipe.detect.token_kinds): on the
world, LeaF should move attention off the planted numbers, not off the numbers the problem needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.detect.scoring import CPU_TOKEN_BUDGET, token_budget_batches
from leafpipe.detect.token_kinds import CORPUS_KINDS, PLANTED_KINDS, token_kinds
from leafpipe.execution.memory import (
    ModelShape,
    attention_analysis_bytes,
    model_shape,
    tokens_within,
)
from leafpipe.text.batching import collate
from leafpipe.text.templates import INSTRUCTION, RESPONSE, EncodedSample, encode_sample

KIND = "kind_"  # prefix of the kind categories: kind_planted_number, kind_own_number, ...


@dataclass(frozen=True)
class AttentionSample:
    """One chat sample with character spans (start, end) inside its instruction.

    `planted_spans` is None where nobody knows where distractors are (real data); an empty
    sequence says there are none. `protected_spans`: text the config protects from pruning
    (detection.protect), a kind of its own. `system`: the corpus row's system prompt, rendered
    as in training; its tokens are template text, whose mass no category counts.
    """

    instruction: str
    response: str
    confounder_spans: Sequence[tuple[int, int]]
    planted_spans: Sequence[tuple[int, int]] | None = None
    protected_spans: Sequence[tuple[int, int]] = ()
    system: str | None = None


def _overlapping(encoded: EncodedSample, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Instruction tokens whose characters overlap any span (template tokens never do)."""
    return np.array(
        [
            field == INSTRUCTION and any(start < hi and end > lo for lo, hi in spans)
            for field, (start, end) in zip(encoded.fields, encoded.offsets)
        ],
        dtype=bool,
    )


def _kind_masks(sample: AttentionSample, encoded: EncodedSample) -> dict[str, np.ndarray]:
    """{KIND + kind: [n] bool} over the sample's tokens for every kind of its family (planted
    kinds with planted spans, corpus kinds without), empty masks included: a known absence."""
    idx = [i for i, f in enumerate(encoded.fields) if f == INSTRUCTION]
    starts = [encoded.offsets[i][0] for i in idx]
    ends = [encoded.offsets[i][1] for i in idx]
    kinds = np.array(
        token_kinds(
            [sample.instruction[a:b] for a, b in zip(starts, ends)],
            starts,
            ends,
            sample.planted_spans,
            sample.protected_spans,
        ),
        dtype=object,
    )
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


def analysis_token_budget(
    shape: ModelShape, free_bytes: int, dtype_bytes: int, longest: int
) -> int:
    """Tokens (samples × longest sample) per batch whose analysis fits in the free memory
    (`memory.tokens_within`).

    The cost of a token grows with the length of its sample (each query attends to T keys), so the
    budget is priced at `longest`, the longest sample analysed, by the planner's own figure
    (`memory.attention_analysis_bytes`): a batch the budget admits is one the planner counted.
    At least 1: a sample longer than the budget gets a batch of its own (`token_budget_batches`),
    and fails loudly if even that does not fit.
    """
    per_token = -(-attention_analysis_bytes(shape, 1, longest, dtype_bytes) // longest)
    return tokens_within(free_bytes, per_token)


def _device_budget(model: PreTrainedModel, longest: int) -> int:
    """`analysis_token_budget` on the GPUs the model is on, limited by the one with the least free
    memory (every layer runs its attention on its own GPU); on a CPU, scoring's CPU_TOKEN_BUDGET."""
    devices = {p.device for p in model.parameters()}
    if any(d.type != "cuda" for d in devices):
        return CPU_TOKEN_BUDGET
    free = min(torch.cuda.mem_get_info(d)[0] for d in devices)
    return analysis_token_budget(model_shape(model.config), free, model.dtype.itemsize, longest)


def _masks_of(sample: AttentionSample, encoded: EncodedSample) -> dict[str, np.ndarray]:
    """{category: [n] bool} over the sample's tokens: confounder, other, planted (when the sample
    has planted spans) and every kind of its family (`_kind_masks`)."""
    confounder = _overlapping(encoded, sample.confounder_spans)
    instruction = np.array([f == INSTRUCTION for f in encoded.fields])
    cats = {"confounder": confounder, "other": instruction & ~confounder}
    if sample.planted_spans is not None:
        cats["planted"] = _overlapping(encoded, sample.planted_spans)
    return {**cats, **_kind_masks(sample, encoded)}


def _reduce(weights: torch.Tensor, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """One layer's attention [B, H, T, T] reduced to masses [B, C] in float64.

    `queries` [B, T] holds 1/Q at a sample's Q response queries (0 elsewhere) and `keys` [B, T, C]
    marks each category's keys, so a mass is the mean over heads and response queries of the weights
    summed over the category's keys. The heads go one at a time so that the float64 copy (sums of
    many tiny weights stay exact) is [B, T, T], never [B, H, T, T].
    """
    per_key = torch.zeros_like(queries)  # [B, T]: weight each key receives, summed over heads
    for head in weights.unbind(1):
        per_key += torch.bmm(queries.unsqueeze(1), head.double()).squeeze(1)
    return torch.bmm(per_key.unsqueeze(1), keys).squeeze(1) / weights.shape[1]


class _LayerMasses:
    """Forward hooks on every layer's attention module that reduce its weights, not keep them.

    A hook gets its module's (attn_output, attn_weights [B, H, T, T]), reduces the weights with
    `_reduce` on their own device (a model spread over GPUs has its layers on several), moves only
    the [B, C] masses to the CPU, and hands the layer (attn_output, None): the weights are freed
    before the rest of the layer runs, so one layer's weights are alive at a time.
    """

    def __init__(self, modules: Sequence[torch.nn.Module]) -> None:
        self.masses: list[torch.Tensor] = []  # per layer, [B, C] on the CPU, for the current batch
        self._masks: tuple[torch.Tensor, torch.Tensor] = (torch.empty(0, 0), torch.empty(0, 0, 0))
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles = [m.register_forward_hook(self._hook) for m in modules]

    def start(self, queries: torch.Tensor, keys: torch.Tensor) -> None:
        """A new batch: `_reduce`'s `queries` [B, T] and `keys` [B, T, C], on the CPU."""
        self.masses, self._masks, self._on_device = [], (queries, keys), {}

    def _hook(self, module: torch.nn.Module, args: tuple, output: tuple) -> tuple:
        weights = output[1]
        if weights is None:
            raise RuntimeError(
                f"{type(module).__name__} returned no attention weights under eager attention"
            )
        if weights.device not in self._on_device:
            self._on_device[weights.device] = tuple(m.to(weights.device) for m in self._masks)
        self.masses.append(_reduce(weights, *self._on_device[weights.device]).cpu())
        return (output[0], None, *output[2:])

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@contextmanager
def _hooked(model: PreTrainedModel) -> Iterator[_LayerMasses]:
    hooks = _LayerMasses([layer.self_attn for layer in model.get_decoder().layers])
    try:
        yield hooks
    finally:
        hooks.remove()


def _batch_masks(
    encoded: Sequence[EncodedSample],
    masks: Sequence[dict[str, np.ndarray]],
    cats: Sequence[str],
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`_reduce`'s `queries` [B, width] and `keys` [B, width, C] of a right-padded batch; a
    category a sample lacks (another family's kind) marks no key."""
    queries = np.zeros((len(encoded), width))
    keys = np.zeros((len(encoded), width, len(cats)))
    for row, (enc, sample_masks) in enumerate(zip(encoded, masks)):
        response = np.array([f == RESPONSE for f in enc.fields])
        queries[row, : len(enc)] = response / response.sum()
        for c, cat in enumerate(cats):
            if cat in sample_masks:
                keys[row, : len(enc), c] = sample_masks[cat]
    return torch.from_numpy(queries), torch.from_numpy(keys)


def layer_masses(
    model: PreTrainedModel,
    encoded: Sequence[EncodedSample],
    masks: Sequence[dict[str, np.ndarray]],
    pad_id: int,
    *,
    batch_size: int,
    max_tokens: int | None,
) -> list[dict[str, np.ndarray]]:
    """Per sample, {category: [L] mass per layer} of its `masks` (see `attention_shares`).

    Batches hold at most `batch_size` samples and `max_tokens` tokens (samples × longest sample;
    None: `_device_budget`). The decoder runs without its head (no logits are needed), and without
    `output_attentions`, so the model itself keeps no weights: the hooks reduce them layer by layer.
    """
    device = next(model.parameters()).device
    lengths = [len(enc) for enc in encoded]
    budget = max_tokens or _device_budget(model, max(lengths))
    cats = list(dict.fromkeys(cat for m in masks for cat in m))
    mass: list[dict[str, np.ndarray]] = [{} for _ in encoded]
    with _eager_eval(model), torch.inference_mode(), _hooked(model) as hooks:
        for idx in token_budget_batches(lengths, budget, batch_size):
            chunk = [encoded[i] for i in idx]
            batch = collate(chunk, pad_id).to(device)
            hooks.start(
                *_batch_masks(chunk, [masks[i] for i in idx], cats, batch.input_ids.shape[1])
            )
            model.get_decoder()(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                use_cache=False,
                output_attentions=False,
            )
            per_layer = torch.stack(hooks.masses, dim=-1).numpy()  # [B, C, L]
            for row, i in enumerate(idx):
                mass[i] = {cat: per_layer[row, cats.index(cat)] for cat in masks[i]}
    return mass


def attention_shares(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    samples: Sequence[AttentionSample],
    *,
    batch_size: int = 8,
    max_tokens: int | None = None,
) -> pd.DataFrame:
    """Attention mass that response tokens put on confounder / other / planted instruction tokens.

    Per sample and layer: the attention weights of each response token (as query) are averaged
    over heads and summed over the keys of a category, giving that query's mass on it; the mass
    is averaged over the sample's response queries. Categories are instruction tokens only:
    "confounder" overlaps a confounder span, "other" is every other instruction token, and
    "planted" (independently of the other two) overlaps a planted span. Template tokens and the
    response itself take the rest of the mass, so confounder + other <= 1. Independently again,
    `kind_<kind>` splits the instruction by leafpipe.detect.token_kinds: with planted spans
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
    see padding, so a sample's numbers do not depend on what it is batched with. A batch holds at
    most `batch_size` samples and `max_tokens` tokens (samples × longest sample; None: what the
    planner's memory model admits on the model's GPUs, CPU_TOKEN_BUDGET on a CPU). Peak memory:
    one layer's attention at a time (`layer_masses`).
    """
    if not samples:
        raise ValueError("no samples to analyse")
    encoded = [
        encode_sample(tokenizer, s.instruction, s.response, system=s.system) for s in samples
    ]
    # Any id will do: padding sits after every real token, so the causal mask hides it.
    pad = tokenizer.pad_token_id
    pad_id = pad if pad is not None else tokenizer.eos_token_id
    masks = [_masks_of(sample, enc) for sample, enc in zip(samples, encoded)]
    mass = layer_masses(model, encoded, masks, pad_id, batch_size=batch_size, max_tokens=max_tokens)
    return _shares_frame(_categories(samples), masks, mass)


def _categories(samples: Sequence[AttentionSample]) -> list[str]:
    """The categories `attention_shares` reports, in column order: planted ones and each family
    of kinds only when some sample has (or lacks) planted spans."""
    has_planted = any(s.planted_spans is not None for s in samples)
    has_corpus = any(s.planted_spans is None for s in samples)
    kinds = [
        KIND + k
        for k in dict.fromkeys(
            (PLANTED_KINDS if has_planted else ()) + (CORPUS_KINDS if has_corpus else ())
        )
    ]
    return ["confounder", "other"] + (["planted"] if has_planted else []) + kinds


def _shares_frame(
    cats: Sequence[str],
    masks: Sequence[dict[str, np.ndarray]],
    mass: Sequence[dict[str, np.ndarray]],
) -> pd.DataFrame:
    """`attention_shares`' frame from each sample's category masks and per-layer masses."""
    columns: dict[str, np.ndarray] = {}
    for cat in cats:
        known = [i for i, m in enumerate(masks) if cat in m]
        columns[f"share_{cat}"] = np.mean([mass[i][cat] for i in known], axis=0)
        present = [i for i in known if masks[i][cat].any()]
        columns[f"per_token_{cat}"] = (
            np.mean([mass[i][cat] / masks[i][cat].sum() for i in present], axis=0)
            if present
            else np.full_like(columns[f"share_{cat}"], np.nan)
        )
    frame = pd.DataFrame(columns)
    frame.loc[len(frame)] = frame.mean(axis=0)
    frame.insert(0, "layer", [str(i) for i in range(len(frame) - 1)] + ["mean"])
    frame["n_samples"] = sum(bool(m["confounder"].any()) for m in masks)
    return frame
