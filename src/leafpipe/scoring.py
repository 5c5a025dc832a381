"""Stage 1a: how strongly each input token steers a model's response loss.

For every sample, L = mean cross-entropy over the response tokens (and the end-of-turn token);
the score of token i is ‖∂L/∂e_i‖₂, the gradient norm at its input embedding. Only the embeddings
require grad, so no parameter gradient is ever allocated. Samples share a batch without
influencing each other: attention masks keep them apart and the summed per-sample losses have
per-sample gradients.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.batching import collate, response_cross_entropy
from leafpipe.templates import INSTRUCTION, RESPONSE, EncodedSample, encode_sample

SCORE_COLUMNS = ["id", "field", "step", "char_start", "char_end", "text", "grad_norm", "loss"]


def embedding_grad_norms(
    model: PreTrainedModel, samples: Sequence[EncodedSample], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token gradient norms [B, T] (fp32) and per-sample losses [B] for one batch."""
    batch = collate(samples, pad_id)
    device = next(model.parameters()).device
    batch = batch.to(device)
    embeds = model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits
    losses = response_cross_entropy(logits, batch)
    (grad,) = torch.autograd.grad(losses.sum(), embeds)
    return grad.float().norm(dim=-1).cpu(), losses.detach().cpu()


def _token_rows(row: dict[str, Any], enc: EncodedSample, norms: torch.Tensor, loss: float) -> dict[str, Any]:
    out: dict[str, Any] = {c: [] for c in SCORE_COLUMNS}
    out["id"], out["loss"] = str(row["id"]), loss
    for i, (field, (start, end)) in enumerate(zip(enc.fields, enc.offsets)):
        if field not in (INSTRUCTION, RESPONSE):
            continue
        text = row[field]
        out["field"].append(field)
        out["step"].append(text.count("\n", 0, start) if field == RESPONSE else -1)
        out["char_start"].append(start)
        out["char_end"].append(end)
        out["text"].append(text[start:end])
        out["grad_norm"].append(float(norms[i]))
    return out


def score_samples(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict[str, Any]],
    *,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Score every content token of every row; returns one row per sample (docs/data-schemas.md)."""
    model.eval()
    model.requires_grad_(False)
    encoded = [encode_sample(tokenizer, r["instruction"], r["response"]) for r in rows]
    # Length-sorted batches waste less compute on padding; results go back in input order.
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i]))
    results: dict[int, dict[str, Any]] = {}
    with tqdm(total=len(rows), desc="score", unit="sample", file=sys.stderr) as bar:
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            norms, losses = embedding_grad_norms(model, [encoded[i] for i in idx], tokenizer.pad_token_id)
            for b, i in enumerate(idx):
                results[i] = _token_rows(rows[i], encoded[i], norms[b], float(losses[b]))
            bar.update(len(idx))
    return pd.DataFrame([results[i] for i in range(len(rows))], columns=SCORE_COLUMNS)
